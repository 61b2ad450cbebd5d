"""The Python API: a trained model, loaded once, that classifies faces.

    import fer_robust
    model = fer_robust.load("runs/rafdb")        # a run directory, a weights file or an .onnx
    probs = model.predict(face)                   # (K,) probabilities of one aligned face crop
    for face in model.predict_photo("group.jpg"):  # every face found, with its box
        print(face.box, face.label, face.confidence)

What the model was trained with comes from the checkpoint itself (the run's ``config.yaml`` and
``classes.json``, or an ONNX file's metadata): the class names, the evaluation transform (RGB,
bilinear resize to ``S x S``, scale to [0, 1], normalise by the mean and std) and how the training
dataset's images frame a face (:class:`~fer_robust.data.dataset_facts.FaceFraming`). A PyTorch model
runs on the GPU when there is one (``device=`` chooses), an ONNX file on onnxruntime's CPU provider,
without importing torch. ``tools/predict.py`` classifies through this class, and its images go
through the same transform as ``tools/test.py``'s, so the three give one model the same
probabilities (``tests/test_api.py``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from fer_robust.data.dataset_facts import FaceFraming
from fer_robust.data.decode import to_rgb

__all__ = ["FERModel", "FacePrediction", "load", "as_image"]


@dataclass(frozen=True)
class FacePrediction:
    """One face found in a photo and its class probabilities.

    Attributes:
        box: ``(x, y, w, h)`` of the detector's box, in photo pixels.
        score: the detector's confidence.
        eyes: the two eye centres ``((x, y), (x, y))``, or None when not both were found.
        probs: ``(K,)`` class probabilities, in the order of :attr:`FERModel.class_names`.
        label: the most probable class.
        confidence: its probability.
    """
    box: tuple[float, float, float, float]
    score: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None
    probs: np.ndarray
    label: str
    confidence: float


def as_image(image: Any) -> Image.Image:
    """``image`` as a PIL image: a PIL image as it is; a file path opened (EXIF orientation
    applied); an array ``(H, W)``, ``(H, W, 1|3|4)`` in RGB order; a torch tensor ``(H, W)`` or
    ``(1|3, H, W)`` (ToTensor's layout). Arrays and tensors are pixels, uint8 or floats in [0, 1],
    not normalised. (An OpenCV image is BGR: convert it with ``image[..., ::-1]`` first.)"""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, (str, Path)):
        from fer_robust.deploy.media import read_image
        return read_image(Path(image))
    is_tensor = type(image).__module__.split(".")[0] == "torch"
    if is_tensor:
        image = image.detach().cpu().numpy()
        if image.ndim == 3:  # C, H, W -> H, W, C
            image = image.transpose(1, 2, 0)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected a PIL image, an array, a tensor or a path, got "
                        f"{type(image).__name__}")
    array = image
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ValueError(f"expected an image of shape (H, W), (H, W, 3) or (H, W, 4)"
                         f"{' (or a tensor (C, H, W))' if is_tensor else ''}, got {image.shape}")
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"expected uint8 pixels or floats in [0, 1], got {array.dtype}")
        if array.size and (array.min() < 0.0 or array.max() > 1.0):
            raise ValueError(f"float pixels must lie in [0, 1] (got {array.min():g} to "
                             f"{array.max():g}): scale them, or pass uint8")
        array = np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(np.ascontiguousarray(array))


class FERModel:
    """A trained expression classifier (:func:`load` makes one).

    Attributes:
        class_names: the classes, in the order of every probability vector.
        dataset: the ``data.name`` it was trained on.
        framing: how that dataset's images frame a face (used to crop faces found in photos).
        source: the path it was loaded from.
    """

    def __init__(self, classifier, source: str | Path) -> None:
        self._classifier = classifier
        self.source = Path(source)
        self.class_names: list[str] = list(classifier.class_names)
        self.dataset: str = classifier.dataset
        self.framing: FaceFraming = classifier.framing
        self._detectors: dict[tuple[str, int], Any] = {}

    def __repr__(self) -> str:
        return (f"FERModel({str(self.source)!r}, dataset={self.dataset!r}, "
                f"classes={self.class_names}, device={str(self.device)!r})")

    @property
    def device(self) -> Any:
        """Where the model runs (a torch device, or ``"cpu"`` for onnxruntime)."""
        return self._classifier.device

    @property
    def preprocessing(self) -> dict:
        """What an image goes through before the model: ``{"size", "mean", "std",
        "interpolation", "framing"}`` (``framing``: the dataset's, as a dict)."""
        c = self._classifier
        return {"size": int(c.img_size), "mean": [float(v) for v in c.mean],
                "std": [float(v) for v in c.std], "interpolation": "bilinear",
                "framing": asdict(self.framing)}

    # -- faces already cropped ------------------------------------------------------------------
    def predict(self, face: Any, hflip: bool = False) -> np.ndarray:
        """``(K,)`` class probabilities of one face crop, framed as the training images were
        (PIL image, array, tensor or path: :func:`as_image`). ``hflip`` averages the logits
        with the mirrored face's (``--tta hflip``)."""
        return self.predict_batch([face], hflip=hflip)[0]

    def predict_batch(self, faces: Sequence[Any], hflip: bool = False,
                      batch_size: int = 64) -> np.ndarray:
        """``(N, K)`` class probabilities of ``faces``, ``batch_size`` at a time."""
        images = [as_image(f) for f in faces]
        if not images:
            return np.zeros((0, len(self.class_names)), dtype=np.float32)
        return np.concatenate([self._classifier.probabilities(images[i:i + batch_size], hflip)
                               for i in range(0, len(images), batch_size)])

    # -- photos --------------------------------------------------------------------------------
    def detector(self, name: str = "hog", min_face: int = 40):
        """The face detector ``name`` (built once per model; needs the ``faces`` extra)."""
        key = (name, int(min_face))
        if key not in self._detectors:
            from fer_robust.deploy.faces import build_detector
            self._detectors[key] = build_detector(name, min_face=min_face)
        return self._detectors[key]

    def predict_photo(self, photo: Any, detector: Any = "hog", min_face: int = 40,
                      framing: FaceFraming | None = None, hflip: bool = False,
                      batch_size: int = 64) -> list[FacePrediction]:
        """Every face found in ``photo`` (PIL image, array, tensor or path), highest detector
        score first, each cropped as the training dataset frames a face and classified.

        Args:
            detector: ``"hog"`` (dlib's), ``"haar"`` (OpenCV's) or a built
                :class:`~fer_robust.deploy.faces.FaceDetector`.
            min_face: the smallest face side searched, in pixels (for a detector given by name).
            framing: how to crop; None is the training dataset's (:attr:`framing`).
        """
        from fer_robust.deploy.faces import crop_face

        if isinstance(detector, str):
            detector = self.detector(detector, min_face)
        rgb = np.asarray(to_rgb(as_image(photo)))
        faces = detector.detect(rgb)
        framing = framing or self.framing
        crops = [crop_face(rgb, f, framing, detector.calibration) for f in faces]
        probs = self.predict_batch(crops, hflip=hflip, batch_size=batch_size)
        out = []
        for face, p in zip(faces, probs):
            k = int(p.argmax())
            out.append(FacePrediction(box=tuple(float(v) for v in face.box),
                                      score=float(face.score), eyes=face.eyes, probs=p,
                                      label=self.class_names[k], confidence=float(p[k])))
        return out

    def with_framing(self, **changes: float) -> FaceFraming:
        """The dataset's framing with ``changes`` (``scale``, ``shift``...) applied; None values
        are left out."""
        return replace(self.framing, **{k: v for k, v in changes.items() if v is not None})


def load(path: str | Path, device: str | None = None) -> FERModel:
    """A trained model from ``path``: a run directory (its best model, or its last under the
    ``full_train`` protocol), a checkpoint folder (``checkpoints/epoch_XXX``), a ``.safetensors``
    weights file inside a run, or an ``.onnx`` file written by ``tools/export.py`` (run by
    onnxruntime; torch is not imported).

    Args:
        device: for a PyTorch model, where it runs (``"cpu"``, ``"cuda"``...); None: the first GPU
            when there is one, else the CPU. An ONNX model runs on the CPU.
    """
    from fer_robust.deploy.classifiers import OnnxClassifier, TorchClassifier

    path = Path(path)
    if path.suffix.lower() == ".onnx":
        if device not in (None, "cpu"):
            raise ValueError(f"an ONNX model runs on onnxruntime's CPU provider, not {device!r}")
        return FERModel(OnnxClassifier(path), path)
    return FERModel(TorchClassifier(path, device), path)
