"""Facts about every dataset: its classes, their order, its splits and its confusable classes.

Class order is each dataset's *official* label order (the ids its label files use), so a model
trained here reports per-class numbers in the order its peers do. Readers import their class list
from :data:`DATASET_SPECS`; nothing else in the package spells class names. (Which datasets can be
read, the ``data.name`` values, is the reader registry of :mod:`fer_robust.data.registry`.)

Confusable classes (used by asymmetric, pair-flip label noise): each emotion is flipped to the one
it is most often mistaken for in published FER confusion matrices (RAF-DB, FERPlus, AffectNet):

==========  ==========  ==================================================================
emotion     flips to    why
==========  ==========  ==================================================================
sad         neutral     low-arousal faces; the largest off-diagonal cell on RAF-DB/FERPlus
neutral     sad         the same pair, the other way
happy       surprise    both open the mouth and raise the cheeks
surprise    fear        raised brows, widened eyes; the classic fear/surprise confusion
fear        surprise    the same pair, the other way
anger       disgust     lowered brows, tightened mouth
disgust     anger       the same pair, the other way
contempt    neutral     a faint, one-sided expression usually read as neutral
==========  ==========  ==================================================================

The map is written once over canonical emotion names (:data:`CONFUSABLE`) and resolved per dataset
by name, so every dataset (and any image folder whose class names are emotions) gets the same
rule in its own class order.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

__all__ = ["FaceFraming", "face_framing", "DatasetSpec", "DATASET_SPECS", "CONFUSABLE", "SPLITS",
           "canonical_emotion", "confusable_targets"]

#: The three splits every reader serves.
SPLITS: tuple[str, ...] = ("train", "val", "test")

#: Canonical emotion -> the emotion it is most often confused with (see the module docstring).
CONFUSABLE: dict[str, str] = {
    "sad": "neutral",
    "neutral": "sad",
    "happy": "surprise",
    "surprise": "fear",
    "fear": "surprise",
    "anger": "disgust",
    "disgust": "anger",
    "contempt": "neutral",
}

# Spellings the datasets use for the same emotion.
_SYNONYMS: dict[str, str] = {
    "neutral": "neutral", "neutrality": "neutral",
    "happy": "happy", "happiness": "happy", "joy": "happy",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
    "fear": "fear", "fearful": "fear", "afraid": "fear",
    "anger": "anger", "angry": "anger",
    "disgust": "disgust", "disgusted": "disgust",
    "contempt": "contempt",
}


@dataclass(frozen=True)
class FaceFraming:
    """How a dataset's images frame a face, so that a face found in a photo can be cropped the
    way the training images were (``tools/predict.py``; ``data/README.md`` has the table).

    Sizes are relative to the *reference framing*: the square that a FER2013/FERPlus image covers
    around the face the detector finds (each detector's box is mapped to it by the calibration of
    :mod:`fer_robust.deploy.faces`, measured on FERPlus by ``benchmarks/face_crops.py``).

    Attributes:
        scale: crop side / reference side (1.0 = framed like FER2013).
        shift: crop centre below the reference centre, in reference sides (negative = above).
        align_eyes: rotate the crop so the eyes are level (datasets aligned on facial landmarks),
            when both eyes are found.
        grayscale: the dataset's images are grayscale, so crops are made grayscale too.
        measured: True when ``scale`` and ``shift`` were measured on the dataset's own images with
            ``benchmarks/face_crops.py``; False for an estimate from the dataset's description.
    """
    scale: float = 1.0
    shift: float = 0.0
    align_eyes: bool = False
    grayscale: bool = False
    measured: bool = False


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset (a FER benchmark) is on disk and by protocol.

    Attributes:
        name: the ``data.name`` config value.
        classes: class names in the dataset's official label order (id = position).
        split_sources: split -> where it comes from (folder, file or ``"carved from ..."``).
        carved_splits: splits that do not exist natively and are carved (seeded, stratified).
        expected_counts: split -> the image count of the standard protocol (documentation and
            summary checks; carved splits depend on ``val_fraction`` and are left out).
        face_framing: how its images frame a face (:class:`FaceFraming`).
        has_votes: each training image comes with its annotators' vote counts (``dataset.votes``:
            FERPlus's 10 taggers), which annotator noise and the vote-distribution training
            (``method.name=votes``) read.
    """
    name: str
    classes: tuple[str, ...]
    split_sources: dict[str, str]
    carved_splits: tuple[str, ...] = ()
    expected_counts: dict[str, int] = field(default_factory=dict)
    face_framing: FaceFraming = FaceFraming()
    has_votes: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def confusable_targets(self) -> np.ndarray:
        """``(C,)`` int array: class id -> id of its confusable class."""
        return confusable_targets(self.classes)


_AFFECTNET8 = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")

DATASET_SPECS: dict[str, DatasetSpec] = {spec.name: spec for spec in [
    DatasetSpec(
        "ferplus",
        ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt"),
        {"train": "FER2013Train/", "val": "FER2013Valid/", "test": "FER2013Test/"},
        expected_counts={"train": 25045, "val": 3191, "test": 3137},
        # FER2013's own images: the reference framing (data/README.md, "Faces in photos").
        face_framing=FaceFraming(grayscale=True, measured=True), has_votes=True),
    DatasetSpec(
        # EAC's and RUL's 7 classes: the FER+ majority vote, then contempt images dropped
        # (fer_robust/data/ferplus.py): 120 contempt images fewer in train, 16 in val.
        "ferplus7",
        ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear"),
        {"train": "FER2013Train/ minus contempt", "val": "FER2013Valid/ minus contempt",
         "test": "FER2013Test/ minus contempt"},
        expected_counts={"train": 24925, "val": 3175},
        face_framing=FaceFraming(grayscale=True, measured=True), has_votes=True),
    DatasetSpec(
        # list_patition_label.txt ids 1..7 in this order; id k is stored as k - 1.
        "rafdb",
        ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral"),
        {"train": "train_* rows minus the carved val", "val": "carved from train_* rows",
         "test": "test_* rows"},
        carved_splits=("val",), expected_counts={"test": 3068},
        # Image/aligned: similarity-aligned on five landmarks; the scale is an estimate.
        face_framing=FaceFraming(scale=1.15, align_eyes=True)),
    DatasetSpec(
        "affectnet8", _AFFECTNET8,
        {"train": "training.csv minus the carved val", "val": "carved from training.csv",
         "test": "validation.csv"},
        carved_splits=("val",), expected_counts={"test": 4000},
        face_framing=FaceFraming(scale=1.2)),  # the released face crops; an estimate
    DatasetSpec(
        "affectnet7", _AFFECTNET8[:7],
        {"train": "training.csv minus the carved val", "val": "carved from training.csv",
         "test": "validation.csv"},
        carved_splits=("val",), expected_counts={"test": 3500},
        face_framing=FaceFraming(scale=1.2)),
    DatasetSpec(
        "sfew",
        ("Angry", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"),
        {"train": "Train/ minus the carved val", "val": "carved from Train/", "test": "Val/"},
        carved_splits=("val",), expected_counts={"test": 436},
        face_framing=FaceFraming(scale=1.1, align_eyes=True)),  # aligned faces; an estimate
    DatasetSpec(
        "fer2013",
        ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral"),
        {"train": "fer2013.csv Usage=Training", "val": "fer2013.csv Usage=PublicTest",
         "test": "fer2013.csv Usage=PrivateTest"},
        expected_counts={"train": 28709, "val": 3589, "test": 3589},
        face_framing=FaceFraming(grayscale=True, measured=True)),  # FERPlus's images
    DatasetSpec(
        "demo",
        ("neutral", "happy", "sad", "surprise", "angry", "disgust", "fear"),
        {"train": "drawn", "val": "drawn", "test": "drawn"},
        # Measured by benchmarks/face_crops.py on the demo val faces that dlib's detector finds.
        face_framing=FaceFraming(scale=1.2, shift=0.01, measured=True)),
]}


def face_framing(dataset: str) -> FaceFraming:
    """How ``dataset``'s images frame a face; the reference framing (upright, colour) for a
    dataset without a spec (``folder``)."""
    spec = DATASET_SPECS.get(dataset)
    return spec.face_framing if spec is not None else FaceFraming()


def canonical_emotion(class_name: str) -> str | None:
    """The canonical emotion a class name denotes (``"Happiness"`` -> ``"happy"``), or None."""
    return _SYNONYMS.get(class_name.strip().lower())


def confusable_targets(classes: Sequence[str]) -> np.ndarray:
    """Map each class id to the id of its confusable class (rule: :data:`CONFUSABLE`).

    Works for any class list whose names are emotions (datasets and image folders alike).

    Raises:
        ValueError: a class name is not an emotion, or its confusable emotion is not among
            ``classes`` (e.g. a folder without ``neutral``); asymmetric noise is undefined there.
    """
    canon = [canonical_emotion(c) for c in classes]
    unknown = [c for c, k in zip(classes, canon) if k is None]
    if unknown:
        raise ValueError(f"no confusable class is defined for class(es) {unknown}: "
                         f"known emotions are {sorted(CONFUSABLE)}")
    position = {k: i for i, k in enumerate(canon)}
    out = np.empty(len(classes), dtype=np.int64)
    for i, k in enumerate(canon):
        partner = CONFUSABLE[k]
        if partner not in position:
            raise ValueError(f"class {classes[i]!r} flips to {partner!r}, which is not among "
                             f"the classes {list(classes)}")
        out[i] = position[partner]
    return out
