"""Faces in photos and video frames: found, located by their eyes, and cropped the way a
benchmark's training images frame a face.

Which detector, and why
-----------------------
Nothing may download weights at run time, so a detector qualifies only if its model ships inside
a registry package. Two do, and both come with the ``faces`` extra
(``pip install -e '.[faces]'``: ``dlib-bin`` and ``opencv-python-headless<5``):

=======  ===========================================  ==========================================
name     model                                        where its weights come from
=======  ===========================================  ==========================================
``hog``  dlib's HOG + linear SVM frontal detector     compiled into dlib (``dlib-bin`` wheel)
         (default)
``haar`` OpenCV's Viola-Jones cascade                 ``cv2.data.haarcascades`` in the OpenCV
         (``haarcascade_frontalface_default.xml``)    wheel
=======  ===========================================  ==========================================

``hog`` is the default because it finds more real faces: on the 3,191 FERPlus validation faces
(48 px grayscale crops of web photos, upscaled 4x and pasted on a plain border;
``benchmarks/face_crops.py``) it finds 77% of them, the Haar cascade 56%, and neither reports a
face on photographs without one (``benchmarks/results/face_crops.json``). It costs more time (about
3x the Haar cascade's on the same image). The Haar cascade remains for platforms without a dlib
wheel. Both miss many of the demo generator's cartoon faces (they find 62% and 49%), so the tests
use a real portrait (``tests/_faces_fixture.py``).

Ruled out: ``facenet-pytorch`` (MTCNN weights in its wheel) pins ``torch<2.3``; ``mediapipe``
shipped BlazeFace's ``.tflite`` files only up to 0.10.21, which pins ``numpy<2``, and later
releases fetch ``.task`` files; OpenCV's YuNet (``cv2.FaceDetectorYN``) and its DNN SSD need model
files that no wheel ships (``opencv-python-headless`` 5.0 even stopped shipping the Haar cascade
files, hence ``<5``); RetinaFace, InsightFace and face-alignment download their weights on first
use.

From a box to a crop
--------------------
Each detector's box sits differently on a face (dlib's is tighter than Haar's). Each detector has
a :class:`BoxCalibration` that maps its box to the *reference framing*, the square a FER2013 /
FERPlus image covers (measured on FERPlus validation faces by ``benchmarks/face_crops.py``). A
dataset's :class:`~fer_robust.data.dataset_facts.FaceFraming` then says how its images frame a
face relative to that reference: scale, vertical shift, eye alignment and grayscale. The crop is
taken at the photo's own resolution and goes through the model's evaluation transform like any
training image.

Eye centres come from OpenCV's eye cascades inside the upper half of the face box (see
:func:`find_eyes`), kept only when they form a plausible pair; they are the landmark points of the
CSV and, for datasets aligned on landmarks, set the crop's rotation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from PIL import Image

from fer_robust.data.dataset_facts import FaceFraming
from fer_robust.deploy.extras import require
from fer_robust.utils import register_in

__all__ = ["Face", "BoxCalibration", "FaceDetector", "box_iou", "build_detector", "list_detectors",
           "find_eyes", "crop_box", "crop_face", "register_detector", "opencv"]

EXTRA = "faces"


def opencv():
    """The ``cv2`` module, or a :class:`~fer_robust.deploy.extras.MissingExtraError` naming the
    ``faces`` extra."""
    return require("cv2", EXTRA, "face detection", "opencv-python-headless")


@dataclass(frozen=True)
class Face:
    """One detected face.

    Attributes:
        box: ``(x, y, w, h)`` of the detector's box, in image pixels.
        score: the detector's confidence (dlib: SVM margin; Haar: the last stage's weight).
        eyes: ``((x, y), (x, y))`` centres of the eye on the image's left and of the one on its
            right, or None when they were not both found.
    """
    box: tuple[float, float, float, float]
    score: float
    eyes: tuple[tuple[float, float], tuple[float, float]] | None = None


@dataclass(frozen=True)
class BoxCalibration:
    """A detector's box -> the reference framing (see the module docstring).

    Attributes:
        scale: reference side / box width.
        shift_x, shift_y: reference centre minus box centre, in box widths.
    """
    scale: float
    shift_x: float = 0.0
    shift_y: float = 0.0

    def reference(self, box: tuple[float, float, float, float]) -> tuple[float, float, float]:
        """``(cx, cy, side)`` of the reference square around the face in ``box``."""
        x, y, w, h = box
        return (x + w / 2 + self.shift_x * w, y + h / 2 + self.shift_y * w, self.scale * w)


class FaceDetector:
    """Base of the detectors: ``detect(rgb) -> list[Face]`` on an ``(H, W, 3)`` uint8 image.

    Images whose longer side exceeds ``max_side`` are searched at that size (boxes are mapped
    back), which bounds the time per photo; faces smaller than ``min_face`` pixels (after that
    downscaling) are not searched for.
    """

    name = ""
    #: Box -> reference framing; measured on FERPlus validation faces (benchmarks/face_crops.py).
    calibration = BoxCalibration(1.0)

    def __init__(self, min_face: int = 40, max_side: int = 1280, find_eyes: bool = True) -> None:
        self.min_face = int(min_face)
        self.max_side = int(max_side)
        self.find_eyes = find_eyes
        self.cv2 = opencv()

    def _boxes(self, rgb: np.ndarray) -> list[tuple[tuple[float, float, float, float], float]]:
        raise NotImplementedError

    def detect(self, rgb: np.ndarray) -> list[Face]:
        """Faces in ``rgb`` ``(H, W, 3)`` uint8, highest score first."""
        rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
        factor = min(1.0, self.max_side / max(rgb.shape[:2]))
        small = rgb if factor == 1.0 else self.cv2.resize(
            rgb, (round(rgb.shape[1] * factor), round(rgb.shape[0] * factor)),
            interpolation=self.cv2.INTER_AREA)
        faces = [Face(tuple(v / factor for v in box), score)
                 for box, score in self._boxes(small)]
        if self.find_eyes and faces:
            gray = self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY)
            faces = [replace(f, eyes=find_eyes(gray, f.box)) for f in faces]
        return sorted(faces, key=lambda f: -f.score)


_DETECTORS: dict[str, type[FaceDetector]] = {}


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """Intersection over union of two ``(x, y, w, h)`` boxes."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    ix = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    iy = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = ix * iy
    return inter / (aw * ah + bw * bh - inter)


def register_detector(name: str) -> Callable[[type[FaceDetector]], type[FaceDetector]]:
    """Class decorator adding a detector under ``name`` (``tools/predict.py --detector``)."""
    def decorator(cls: type[FaceDetector]) -> type[FaceDetector]:
        cls.name = name
        return register_in(_DETECTORS, "face detector", name)(cls)
    return decorator


def list_detectors() -> list[str]:
    return sorted(_DETECTORS)


def build_detector(name: str = "hog", **kwargs) -> FaceDetector:
    """The detector registered as ``name`` (``hog`` or ``haar``); raises
    :class:`~fer_robust.deploy.extras.MissingExtraError` when its package is missing."""
    if name not in _DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {list_detectors()}")
    return _DETECTORS[name](**kwargs)


@register_detector("hog")
class HogDetector(FaceDetector):
    """dlib's frontal face detector (HOG features, linear SVM; five poses: frontal, left, right,
    and frontal turned left and right). Its 80 px window is upsampled to reach ``min_face``."""

    calibration = BoxCalibration(scale=1.231, shift_x=-0.006, shift_y=-0.104)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        dlib = require("dlib", EXTRA, "the hog face detector", "dlib-bin")
        self._detector = dlib.get_frontal_face_detector()
        self.upsample = max(0, math.ceil(math.log2(80 / self.min_face)))

    def _boxes(self, rgb):
        rects, scores, _ = self._detector.run(rgb, self.upsample, 0.0)
        return [((float(r.left()), float(r.top()), float(r.width()), float(r.height())), float(s))
                for r, s in zip(rects, scores)]


@register_detector("haar")
class HaarDetector(FaceDetector):
    """OpenCV's Viola-Jones frontal face cascade on the histogram-equalised gray image."""

    calibration = BoxCalibration(scale=1.049, shift_x=-0.003, shift_y=0.0)

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._cascade = _cascade(self.cv2, "haarcascade_frontalface_default.xml")

    def _boxes(self, rgb):
        cv2 = self.cv2
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray, scaleFactor=1.1, minNeighbors=5, minSize=(self.min_face, self.min_face),
            outputRejectLevels=True)
        return [(tuple(float(v) for v in box), float(s))
                for box, s in zip(boxes, np.ravel(weights))]


def _cascade(cv2, filename: str):
    path = cv2.data.haarcascades + filename
    cascade = cv2.CascadeClassifier(path)
    if cascade.empty():
        raise FileNotFoundError(f"OpenCV's {filename} is missing from {cv2.data.haarcascades} "
                                "(opencv-python-headless 5 no longer ships it: pip install "
                                "'opencv-python-headless<5')")
    return cascade


# Eye cascades whose candidates are pooled: the plain one misses eyes behind glasses.
_EYE_CASCADE_FILES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml",
                      "haarcascade_lefteye_2splits.xml")
_EYE_CASCADES: list = []


def find_eyes(gray: np.ndarray, box: tuple[float, float, float, float]
              ) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Centres of the two eyes of the face in ``box``, or None.

    OpenCV's eye cascades (the plain one, the one for glasses and the left-eye one, their
    candidates pooled) search the box's upper band (10% to 60% of its height); a candidate counts
    on a side when its centre lies in that half of the box, and the pair is kept only when it is
    plausible for an upright frontal face: eyes between 25% and 75% of the box width apart and
    tilted by less than 30 degrees. On each side the candidates vote: the one with most others
    within 8% of the box width wins (ties: the nearest the usual eye position, 30% / 70% of the
    width and 38% of the height), and the mean of its neighbours is the eye's centre. The points
    are approximate: on a portrait turned by -15 to 15 degrees the eyes' tilt is read within about
    5 degrees (tests/test_faces.py).
    """
    cv2 = opencv()
    if not _EYE_CASCADES:
        _EYE_CASCADES.extend(_cascade(cv2, name) for name in _EYE_CASCADE_FILES)
    x, y, w, h = (int(round(v)) for v in box)
    x0, y0 = max(0, x), max(0, y + int(0.1 * h))
    band = gray[y0:max(y0, y + int(0.6 * h)), x0:max(x0, x + w)]
    if band.size == 0 or w < 24:
        return None
    centres = [(x0 + ex + ew / 2, y0 + ey + eh / 2)
               for cascade in _EYE_CASCADES
               for ex, ey, ew, eh in cascade.detectMultiScale(
                   band, scaleFactor=1.1, minNeighbors=2, minSize=(max(6, w // 10),) * 2,
                   maxSize=(max(7, w // 2),) * 2)]
    mid = x + w / 2
    pair = []
    for side, expected_x in ((-1, x + 0.3 * w), (1, x + 0.7 * w)):
        candidates = np.asarray([c for c in centres if (c[0] - mid) * side > 0])
        if not len(candidates):
            return None
        # The cascades agree on a real eye and scatter on eyebrows and frames: take the candidate
        # with most others within 8% of the box width, then the one nearest the usual position.
        near = np.linalg.norm(candidates[:, None] - candidates[None], axis=2) < 0.08 * w
        votes = near.sum(1)
        offset = np.hypot(candidates[:, 0] - expected_x, candidates[:, 1] - (y + 0.38 * h))
        best = candidates[near[np.lexsort((offset, -votes))[0]]].mean(0)
        pair.append((float(best[0]), float(best[1])))
    (lx, ly), (rx, ry) = pair
    dx, dy = rx - lx, ry - ly
    if not 0.25 * w <= math.hypot(dx, dy) <= 0.75 * w or abs(math.degrees(math.atan2(dy, dx))) > 30:
        return None
    return (float(lx), float(ly)), (float(rx), float(ry))


def crop_box(face: Face, framing: FaceFraming, calibration: BoxCalibration
             ) -> tuple[float, float, float, float]:
    """``(cx, cy, side, angle_degrees)`` of the square crop of ``face`` under ``framing``: the
    reference square scaled and shifted as the dataset frames faces, turned by the eyes' tilt
    when the dataset is aligned and both eyes were found."""
    cx, cy, side = calibration.reference(face.box)
    cy += framing.shift * side
    angle = 0.0
    if framing.align_eyes and face.eyes is not None:
        (lx, ly), (rx, ry) = face.eyes
        angle = math.degrees(math.atan2(ry - ly, rx - lx))
    return cx, cy, framing.scale * side, angle


def crop_face(rgb: np.ndarray, face: Face, framing: FaceFraming, calibration: BoxCalibration
              ) -> Image.Image:
    """The crop of ``face`` in ``rgb`` ``(H, W, 3)`` uint8 under ``framing``, as a PIL image at
    the photo's resolution (side = the crop's side in pixels), upright, grayscale (mode ``L``)
    when the dataset's images are. Parts outside the photo repeat its border."""
    cv2 = opencv()
    cx, cy, side, angle = crop_box(face, framing, calibration)
    out = max(1, int(round(side)))
    # dest = R(-angle) (src - centre) + out / 2: the crop's axes turn with the eyes.
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, 1.0)
    matrix[:, 2] += (out / 2 - cx, out / 2 - cy)
    crop = cv2.warpAffine(np.ascontiguousarray(rgb), matrix, (out, out), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    image = Image.fromarray(crop, "RGB")
    return image.convert("L") if framing.grayscale else image
