"""Class-per-folder images: the generic reader, and SFEW 2.0, which is laid out that way.

Generic layout::

    root/train/<class>/*.{jpg,jpeg,png,bmp,webp}
    root/val/<class>/...      (optional: carved from train when absent)
    root/test/<class>/...

Class order is the sorted train folder names unless an explicit list is given. A file with another
extension is not an image: it is counted in ``dataset.notes`` rather than silently skipped; hidden
files (``.DS_Store``) are ignored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data._reading import (IMAGE_EXTENSIONS, SplitNotFoundError, carve, check_split,
                                      finish_dataset, require_dir)

__all__ = ["read_image_folder", "list_class_folders", "scan_class_folders"]


def list_class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the (non-hidden) sub-folders of ``split_dir``."""
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_class_folders(split_dir: Path, classes: Sequence[str], what: str,
                       every_class: bool = False) -> tuple[list[str], np.ndarray, list[str]]:
    """Image paths and class ids under ``split_dir/<class>/``, sorted by class then file name.

    Args:
        every_class: each class must have images (the folder training reads: a class without
            images would be trained as an output no image ever teaches).

    Returns:
        ``(paths, targets, notes)``; notes count the non-image files left out.

    Raises:
        DatasetFormatError: a sub-folder that is not one of ``classes`` (naming it), or with
            ``every_class`` a class without images (naming its folder).
    """
    index = {c: i for i, c in enumerate(classes)}
    unknown = [d for d in list_class_folders(split_dir) if d not in index]
    if unknown:
        raise DatasetFormatError(f"{what}: folder(s) {[str(split_dir / d) for d in unknown]} are not "
                                 f"classes; expected sub-folders among {list(classes)}")
    paths: list[str] = []
    targets: list[int] = []
    others: list[str] = []
    for cls in classes:
        cls_dir = split_dir / cls
        if not cls_dir.is_dir():
            continue  # a class with no images in this split; the count table shows the zero
        for f in sorted(cls_dir.iterdir()):
            if f.name.startswith(".") or f.is_dir():
                continue
            if f.suffix.lower() in IMAGE_EXTENSIONS:
                paths.append(str(f))
                targets.append(index[cls])
            else:
                others.append(str(f))
    if every_class:
        present = set(targets)
        empty = [c for i, c in enumerate(classes) if i not in present]
        if empty:
            raise DatasetFormatError(
                f"{what}: class folder(s) {[str(split_dir / c) for c in empty]} hold no images; "
                "every class needs training images (add some; in a folder dataset, or remove the folder)")
    notes = []
    if others:
        notes.append(f"{what}: left out {len(others)} non-image file(s), first: {others[:5]}")
    return paths, np.asarray(targets, dtype=np.int64), notes


def read_image_folder(root: str | Path, split: str, *, skip_unreadable: bool = False,
                      classes: Sequence[str] | None = None, val_fraction: float = 0.1,
                      split_seed: int = 0, name: str = "folder") -> FERDataset:
    """A class-per-folder dataset's ``split``; 'val' is carved from 'train' if ``root/val`` is absent.

    Args:
        root: folder holding ``train/``, and optionally ``val/`` and ``test/``.
        split: 'train', 'val' or 'test'.
        classes: class names in label order; default: the sorted folder names under ``train/``.
        val_fraction, split_seed: the carve used when ``root/val`` does not exist (then 'train' is
            what remains of ``root/train``).
        name: dataset name for messages.
    """
    check_split(split, name)
    root = require_dir(Path(root), f"{name} root")
    train_dir = require_dir(root / "train", f"{name} train")
    if classes is None:
        classes = list_class_folders(train_dir)
        if not classes:
            raise DatasetFormatError(f"{name}: no class folders under {train_dir}")
    carved = not (root / "val").is_dir()
    source = "train" if split in ("train", "val") and carved else split
    split_dir = root / source
    if not split_dir.is_dir():
        raise SplitNotFoundError(f"{name} {split}: expected folder not found: {split_dir}")
    paths, targets, notes = scan_class_folders(split_dir, classes, f"{name} {split}",
                                               every_class=source == "train")
    if carved and split != "test":
        rows = carve(targets, split, val_fraction, split_seed)
        paths, targets = [paths[i] for i in rows], targets[rows]
        notes.append(f"{split} carved from {split_dir} (val_fraction={val_fraction}, "
                     f"split_seed={split_seed})")
    return finish_dataset(classes, targets, paths, name=name, split=split,
                          skip_unreadable=skip_unreadable, notes=notes)
