"""Face crops in, class probabilities out, from a training run (PyTorch) or from an exported ONNX
file (onnxruntime alone).

Both classifiers prepare an image as training's evaluation transform does
(:func:`fer_robust.data.transforms.build_transform`: RGB, bilinear resize to ``S x S``, scale to
[0, 1], normalise by the ImageNet mean and std) and return ``(N, K)`` probabilities; with
``hflip`` the logits of the mirrored images are averaged in, as ``--tta hflip`` does in
``tools/test.py``. :class:`OnnxClassifier` imports neither torch nor any training code, so a
deployment needs only numpy, Pillow and onnxruntime (plus OpenCV and dlib for face detection).
:func:`fer_robust.load` (:mod:`fer_robust.deploy.api`) picks one for a path: the way to use them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fer_robust.data.dataset_facts import FaceFraming, face_framing
from fer_robust.data.decode import to_rgb
from fer_robust.deploy.extras import require

__all__ = ["ONNX_METADATA_KEY", "TorchClassifier", "OnnxClassifier", "OnnxModelError",
           "softmax"]

#: Key of the ONNX metadata entry (JSON) that holds what inference needs besides the graph.
ONNX_METADATA_KEY = "fer_robust"


class OnnxModelError(FileNotFoundError):
    """The ONNX file is missing, unreadable or was not written by ``tools/export.py``."""


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class TorchClassifier:
    """The trained model of a run (``tools/predict.py --checkpoint``), in eval mode.

    Args:
        checkpoint: a run directory, checkpoint folder or ``.safetensors`` file inside a run.
        device: where the model runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``...); None: the first
            GPU when there is one, else the CPU.

    Attributes:
        class_names, framing (the training dataset's :class:`FaceFraming`), dataset (its name),
        img_size, mean and std (the evaluation transform's, from the run's config), device.
    """

    def __init__(self, checkpoint: str | Path, device: str | None = None) -> None:
        import torch

        from fer_robust.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transform
        from fer_robust.engine.inference import load_trained_model

        cfg, model, self.class_names, self.run_dir = load_trained_model(checkpoint)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device)
        self.transform = build_transform(cfg.data, train=False)
        self.config = cfg
        self.dataset = cfg.data.name
        self.framing = face_framing(cfg.data.name)
        self.img_size = cfg.data.img_size
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def probabilities(self, images: Sequence[Image.Image], hflip: bool = False) -> np.ndarray:
        """``(N, K)`` class probabilities of ``images`` (PIL, any mode)."""
        import torch

        from fer_robust.engine.evaluation import tta_logits
        with torch.no_grad():
            batch = torch.stack([self.transform(image) for image in images]).to(self.device)
            return tta_logits(self.model, batch, hflip).softmax(1).cpu().numpy()


class OnnxClassifier:
    """An ONNX file written by ``tools/export.py``, run by onnxruntime on the CPU.

    Args:
        path: the ``.onnx`` file; its metadata (:data:`ONNX_METADATA_KEY`) gives the class names,
            input size, normalisation and the training dataset's face framing.
        threads: onnxruntime's intra-op threads (None: its default, one per core).
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "export", "running an ONNX model")
        path = Path(path)
        if not path.is_file():
            raise OnnxModelError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types
            raise OnnxModelError(f"cannot load ONNX model {path}: {e}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if ONNX_METADATA_KEY not in meta:
            raise OnnxModelError(f"{path} has no {ONNX_METADATA_KEY!r} metadata: export it with "
                                 "tools/export.py")
        info = json.loads(meta[ONNX_METADATA_KEY])
        self.info = info
        self.class_names: list[str] = list(info["classes"])
        self.img_size = int(info["img_size"])
        self.mean, self.std = tuple(info["mean"]), tuple(info["std"])
        self.device = "cpu"
        self.dataset = info.get("dataset", "")
        self.framing = FaceFraming(**info.get("face_framing", {}))
        self.input_name = self.session.get_inputs()[0].name

    def preprocess(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, 3, S, S)`` float32, as :func:`~fer_robust.data.transforms.build_transform`'s
        evaluation transform (PIL's bilinear resize, which torchvision's ``Resize`` calls)."""
        size = (self.img_size, self.img_size)
        arrays = [np.asarray(to_rgb(im).resize(size, Image.BILINEAR), dtype=np.float32)
                  for im in images]
        batch = np.stack(arrays).transpose(0, 3, 1, 2) / np.float32(255.0)
        mean = np.asarray(self.mean, dtype=np.float32).reshape(1, 3, 1, 1)
        std = np.asarray(self.std, dtype=np.float32).reshape(1, 3, 1, 1)
        return (batch - mean) / std

    def logits(self, batch: np.ndarray, hflip: bool = False) -> np.ndarray:
        """``(N, K)`` logits of a preprocessed batch (averaged with the mirrored batch's if
        ``hflip``)."""
        out = self.session.run(["logits"], {self.input_name: batch})[0]
        if hflip:
            out = 0.5 * (out + self.session.run(
                ["logits"], {self.input_name: np.ascontiguousarray(batch[..., ::-1])})[0])
        return out

    def probabilities(self, images: Sequence[Image.Image], hflip: bool = False) -> np.ndarray:
        return softmax(self.logits(self.preprocess(images), hflip))


def framing_metadata(framing: FaceFraming) -> dict:
    return dataclasses.asdict(framing)
