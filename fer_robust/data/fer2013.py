"""FER2013 (Goodfellow et al., ICONIP 2013; the Kaggle release).

On-disk layout::

    root/fer2013.csv    header: emotion,pixels,Usage
                        emotion 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral
                        pixels  2304 space-separated ints = one 48x48 grayscale face
                        Usage   Training (28,709) / PublicTest (3,589) / PrivateTest (3,589)

Splits: train = Training, val = PublicTest, test = PrivateTest: the standard protocol, with the
published counts 28,709 / 3,589 / 3,589. ``val_source="carve"`` instead carves val (seeded,
stratified) out of Training and leaves PublicTest unused, for runs that must match a carved protocol.
The faces are decoded once into a ``(N, 48, 48)`` uint8 array held in memory; ``paths`` are
``"fer2013.csv:<line>"``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data._reading import carve, check_split, finish_dataset, require_dir, require_file

__all__ = ["read_fer2013", "FER2013_USAGE"]

FER2013_USAGE: dict[str, str] = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
_SIDE = 48


class _ArrayLoader:
    """Picklable loader: sample ``i`` is the grayscale image ``pixels[i]``."""

    def __init__(self, pixels: np.ndarray):
        self.pixels = pixels

    def __call__(self, i: int) -> Image.Image:
        return Image.fromarray(self.pixels[i])  # 2-D uint8 -> mode "L"

    def select(self, keep: np.ndarray) -> "_ArrayLoader":
        return _ArrayLoader(self.pixels[keep])


def _parse_csv(csv_file: Path, usages: set[str]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Labels ``(N,)``, faces ``(N, 48, 48)`` uint8 and line numbers of the rows whose Usage is in
    ``usages`` (other rows are checked for their label and Usage but their pixels not decoded)."""
    num_classes = len(DATASET_SPECS["fer2013"].classes)
    labels: list[int] = []
    faces: list[np.ndarray] = []
    lines: list[int] = []
    with open(csv_file, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        if header[:3] != ["emotion", "pixels", "Usage"]:
            raise DatasetFormatError(f"{csv_file}:1: expected the header 'emotion,pixels,Usage', "
                                     f"got {','.join(header)!r}")
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) != 3:
                raise DatasetFormatError(f"{csv_file}:{line}: expected 3 columns, got {len(row)}")
            raw_label, pixels, usage = row[0].strip(), row[1], row[2].strip()
            if usage not in FER2013_USAGE.values():
                raise DatasetFormatError(f"{csv_file}:{line}: Usage {usage!r} is not one of "
                                         f"{sorted(FER2013_USAGE.values())}")
            try:
                label = int(raw_label)
            except ValueError:
                raise DatasetFormatError(f"{csv_file}:{line}: emotion {raw_label!r} is not an "
                                         "integer") from None
            if not 0 <= label < num_classes:
                raise DatasetFormatError(f"{csv_file}:{line}: unknown class id {label} "
                                         f"(FER2013 emotions are 0..{num_classes - 1})")
            if usage not in usages:
                continue
            try:
                values = np.array(pixels.split(), dtype=np.int64)
            except ValueError:
                raise DatasetFormatError(f"{csv_file}:{line}: pixels are not integers") from None
            if values.size != _SIDE * _SIDE:
                raise DatasetFormatError(f"{csv_file}:{line}: expected {_SIDE * _SIDE} pixel values "
                                         f"(a {_SIDE}x{_SIDE} face), got {values.size}")
            outside = np.flatnonzero((values < 0) | (values > 255))
            if outside.size:
                raise DatasetFormatError(f"{csv_file}:{line}: pixel values must be in 0..255, got "
                                         f"{values[outside[0]]} at position {outside[0]} "
                                         f"({outside.size} value(s) outside)")
            labels.append(label)
            faces.append(values.astype(np.uint8).reshape(_SIDE, _SIDE))
            lines.append(line)
    pixels_arr = np.stack(faces) if faces else np.empty((0, _SIDE, _SIDE), dtype=np.uint8)
    return np.asarray(labels, dtype=np.int64), pixels_arr, lines


def read_fer2013(root: str | Path, split: str, *, skip_unreadable: bool = False,
                 val_source: str = "public_test", val_fraction: float = 0.1,
                 split_seed: int = 0) -> FERDataset:
    """FER2013 ``split`` from ``root/fer2013.csv``.

    Args:
        root: folder holding ``fer2013.csv``.
        split: 'train', 'val' or 'test' (PrivateTest).
        skip_unreadable: accepted for a uniform signature; the pixels live in the CSV, so a bad
            row is always a format error.
        val_source: 'public_test' (standard protocol) or 'carve' (val carved from Training with
            ``val_fraction`` and ``split_seed``; train is the rest of Training).
    """
    check_split(split, "fer2013")
    if val_source not in ("public_test", "carve"):
        raise ValueError(f"val_source must be 'public_test' or 'carve', got {val_source!r}")
    root = require_dir(Path(root), "FER2013 root")
    csv_file = require_file(root / "fer2013.csv", "FER2013 labels")
    carved = val_source == "carve" and split != "test"
    usage = "Training" if carved else FER2013_USAGE[split]
    labels, pixels, lines = _parse_csv(csv_file, {usage})
    notes = []
    if carved:
        rows = carve(labels, split, val_fraction, split_seed)
        labels, pixels, lines = labels[rows], pixels[rows], [lines[i] for i in rows]
        notes.append(f"{split} carved from Usage=Training (val_fraction={val_fraction}, "
                     f"split_seed={split_seed}); PublicTest unused")
    return finish_dataset(DATASET_SPECS["fer2013"].classes, labels,
                          [f"{csv_file.name}:{n}" for n in lines], name="fer2013", split=split,
                          skip_unreadable=skip_unreadable, check_files=False, notes=notes,
                          loader=_ArrayLoader(pixels))
