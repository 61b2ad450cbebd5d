"""SFEW 2.0: Static Facial Expressions in the Wild (Dhall et al., ICCV Workshops 2011).

On-disk layout (the EmotiW release, faces already cropped)::

    root/Train/<Class>/*.jpg|png      958 images
    root/Val/<Class>/*.jpg|png        436 images
    Class in Angry, Disgust, Fear, Happy, Neutral, Sad, Surprise

The SFEW test labels were never released, so results are reported on Val: here Val serves as
``test`` and the ``val`` split is carved (seeded, stratified) from Train.
"""
from __future__ import annotations

from pathlib import Path

from fer_robust.data.base import FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data._reading import carve, check_split, finish_dataset, require_dir
from fer_robust.data.image_folder import scan_class_folders

__all__ = ["read_sfew"]


def read_sfew(root: str | Path, split: str, *, skip_unreadable: bool = False,
              val_fraction: float = 0.1, split_seed: int = 0) -> FERDataset:
    """SFEW 2.0 ``split``: 'train'/'val' carved from ``Train/``, 'test' = the official ``Val/``.

    Raises:
        DatasetFormatError: missing root, a sub-folder that is not one of the 7 classes, a missing
            image (unless ``skip_unreadable``), or an empty split.
        SplitNotFoundError: ``Train/`` or ``Val/`` is absent.
    """
    check_split(split, "sfew")
    root = require_dir(Path(root), "SFEW root")
    classes = DATASET_SPECS["sfew"].classes
    source = "Val" if split == "test" else "Train"
    split_dir = require_dir(root / source, f"SFEW {split}", missing_split=True)
    paths, targets, notes = scan_class_folders(split_dir, classes, f"SFEW {split}",
                                               every_class=source == "Train")
    if split != "test" and len(targets):
        rows = carve(targets, split, val_fraction, split_seed)
        paths, targets = [paths[i] for i in rows], targets[rows]
    return finish_dataset(classes, targets, paths, name="sfew", split=split,
                          skip_unreadable=skip_unreadable, notes=notes)
