"""RAF-DB basic emotions (Li, Deng & Du, CVPR 2017).

On-disk layout (the official release)::

    root/EmoLabel/list_patition_label.txt     "train_00001.jpg 5" / "test_0001.jpg 3", labels 1-7
    root/Image/aligned/train_00001_aligned.jpg

Labels 1..7 = Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral, stored as ids 0..6.
RAF-DB has no validation split; peers choose epochs on the test set, which we must not do, so the
validation split is carved (seeded, stratified) from the 12,271 training images and ``train`` is the
rest. ``test`` is the official 3,068-image test set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data._reading import (carve, check_split, finish_dataset, refuse_duplicate_rows,
                                      refuse_path_outside_root, require_dir, require_file)

__all__ = ["read_rafdb", "parse_partition_file", "partition_rows", "rafdb_image_file",
           "RAFDB_LABEL_FILE"]

RAFDB_LABEL_FILE = "EmoLabel/list_patition_label.txt"  # sic: the release spells it "patition"


def rafdb_image_file(name: str, image_suffix: str = "_aligned") -> str:
    """The image file of a label-file name: ``train_00001.jpg`` -> ``train_00001_aligned.jpg``."""
    stem, ext = name.rsplit(".", 1) if "." in name else (name, "jpg")
    return f"{stem}{image_suffix}.{ext}"


def partition_rows(lines: Iterable[str], label_file: Path) -> Iterator[tuple[int, str, int]]:
    """``(line, image name, 0-based label)`` of each row of ``lines``, read as
    ``list_patition_label.txt`` (blank lines skipped), with errors naming ``label_file`` and the
    line. The published noisy lists (``noise01.txt``...) are read with it too."""
    num_classes = len(DATASET_SPECS["rafdb"].classes)
    for line_no, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise DatasetFormatError(f"{label_file}:{line_no}: expected '<image> <label>', "
                                     f"got {line.strip()[:80]!r}")
        name, raw = fields
        refuse_path_outside_root(name, label_file, line_no)
        if not (name.startswith("train_") or name.startswith("test_")):
            raise DatasetFormatError(f"{label_file}:{line_no}: image name {name!r} starts with "
                                     "neither 'train_' nor 'test_'")
        try:
            label = int(raw)
        except ValueError:
            raise DatasetFormatError(f"{label_file}:{line_no}: label {raw!r} is not an "
                                     "integer") from None
        if not 1 <= label <= num_classes:
            raise DatasetFormatError(f"{label_file}:{line_no}: unknown class id {label} "
                                     f"(RAF-DB basic labels are 1..{num_classes})")
        yield line_no, name, label - 1


def parse_partition_file(label_file: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image names, 0-based labels and an is-test mask, with errors naming file and line."""
    with open(label_file) as f:
        rows = list(partition_rows(f, label_file))
    names = [name for _, name, _ in rows]
    refuse_duplicate_rows(names, [line for line, _, _ in rows], label_file)
    return (names, np.asarray([label for _, _, label in rows], dtype=np.int64),
            np.asarray([name.startswith("test_") for name in names], dtype=bool))


def read_rafdb(root: str | Path, split: str, *, skip_unreadable: bool = False,
               val_fraction: float = 0.1, split_seed: int = 0, image_dir: str = "Image/aligned",
               image_suffix: str = "_aligned") -> FERDataset:
    """RAF-DB basic ``split``: train/val carved from the official train rows, test official.

    Args:
        root: the RAF-DB ``basic`` folder.
        split: 'train', 'val' (carved) or 'test'.
        val_fraction: share of each class of the official train rows moved to 'val'.
        split_seed: seed of the carve.
        image_dir: folder of the images under ``root``.
        image_suffix: added to each label-file stem (``train_00001`` -> ``train_00001_aligned.jpg``);
            use ``image_dir="Image/original", image_suffix=""`` for the unaligned images.
    """
    check_split(split, "rafdb")
    root = require_dir(Path(root), "RAF-DB root")
    label_file = require_file(root / RAFDB_LABEL_FILE, "RAF-DB labels")
    images = require_dir(root / image_dir, "RAF-DB images")
    names, labels, is_test = parse_partition_file(label_file)
    rows = np.flatnonzero(is_test) if split == "test" else np.flatnonzero(~is_test)
    if split != "test":
        rows = rows[carve(labels[rows], split, val_fraction, split_seed)]
    paths = [str(images / rafdb_image_file(names[i], image_suffix)) for i in rows]
    return finish_dataset(DATASET_SPECS["rafdb"].classes, labels[rows], paths, name="rafdb",
                          split=split, skip_unreadable=skip_unreadable)
