"""AffectNet, manually annotated part (Mollahosseini et al., IEEE TAC 2017).

On-disk layout (the official release)::

    root/training.csv      header: subDirectory_filePath,face_x,face_y,face_width,face_height,
    root/validation.csv            facial_landmarks,expression,valence,arousal
    root/Manually_Annotated_Images/<subDirectory_filePath>

Expression ids: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger, 7 Contempt,
8 None, 9 Uncertain, 10 No-Face. By protocol ids 8-10 are dropped, and AffectNet-7 also drops
Contempt; the counts dropped are recorded in ``dataset.notes``. The official validation set
(500 per class: 4,000 for AffectNet-8, 3,500 for AffectNet-7) serves as test; the validation split
is carved (seeded, stratified) from training.csv.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data.decode import to_rgb
from fer_robust.data._reading import (carve, check_split, finish_dataset, refuse_duplicate_rows,
                                      refuse_path_outside_root, require_dir, require_file)

__all__ = ["read_affectnet", "AFFECTNET_COLUMNS"]

AFFECTNET_COLUMNS: tuple[str, ...] = ("subDirectory_filePath", "face_x", "face_y", "face_width",
                                      "face_height", "facial_landmarks", "expression", "valence",
                                      "arousal")
_MAX_EXPRESSION_ID = 10  # 8 None, 9 Uncertain, 10 No-Face


class _FaceBoxLoader:
    """Picklable loader that opens image ``i`` and crops it to its face box ``(x, y, w, h)``."""

    def __init__(self, paths: Sequence[str], boxes: np.ndarray):
        self.paths, self.boxes = list(paths), np.asarray(boxes, dtype=np.int64)

    def __call__(self, i: int) -> Image.Image:
        x, y, w, h = (int(v) for v in self.boxes[i])
        with Image.open(self.paths[i]) as img:
            return to_rgb(img.crop((x, y, x + w, y + h)))

    def select(self, keep: np.ndarray) -> "_FaceBoxLoader":
        return _FaceBoxLoader([self.paths[i] for i in keep], self.boxes[keep])


def _parse_csv(csv_file: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Relative image paths, expression ids ``(N,)`` and face boxes ``(N, 4)``."""
    with open(csv_file, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise DatasetFormatError(f"{csv_file}: the file is empty (expected a header row)")
        header = [h.strip() for h in header]
        missing = [c for c in ("subDirectory_filePath", "face_x", "face_y", "face_width",
                               "face_height", "expression") if c not in header]
        if missing:
            raise DatasetFormatError(f"{csv_file}:1: header lacks column(s) {missing}; "
                                     f"expected {','.join(AFFECTNET_COLUMNS)}")
        col = {name: header.index(name) for name in header}
        box_cols = [col["face_x"], col["face_y"], col["face_width"], col["face_height"]]
        rel_paths: list[str] = []
        labels: list[int] = []
        boxes: list[list[int]] = []
        lines: list[int] = []
        for row in reader:
            line = reader.line_num
            if not row:
                continue
            if len(row) < len(header):
                raise DatasetFormatError(f"{csv_file}:{line}: expected {len(header)} columns, "
                                         f"got {len(row)}")
            try:
                label = int(row[col["expression"]])
            except ValueError:
                raise DatasetFormatError(f"{csv_file}:{line}: expression "
                                         f"{row[col['expression']]!r} is not an integer") from None
            if not 0 <= label <= _MAX_EXPRESSION_ID:
                raise DatasetFormatError(f"{csv_file}:{line}: unknown class id {label} "
                                         f"(AffectNet expressions are 0..{_MAX_EXPRESSION_ID})")
            try:
                box = [int(float(row[c])) for c in box_cols]
            except ValueError:
                raise DatasetFormatError(f"{csv_file}:{line}: face box "
                                         f"{[row[c] for c in box_cols]} is not numeric") from None
            rel_paths.append(refuse_path_outside_root(row[col["subDirectory_filePath"]].strip(),
                                                      csv_file, line))
            labels.append(label)
            boxes.append(box)
            lines.append(line)
    refuse_duplicate_rows(rel_paths, lines, csv_file)
    return rel_paths, np.asarray(labels, dtype=np.int64), np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def read_affectnet(root: str | Path, split: str, *, num_classes: int = 8,
                   skip_unreadable: bool = False, val_fraction: float = 0.1, split_seed: int = 0,
                   crop_face: bool = False) -> FERDataset:
    """AffectNet-8 or AffectNet-7 ``split``: train/val carved from training.csv, test = validation.csv.

    Args:
        root: folder holding the two CSV files and ``Manually_Annotated_Images/``.
        split: 'train', 'val' (carved) or 'test' (the official validation set).
        num_classes: 8 (ids 0-7) or 7 (Contempt dropped too).
        val_fraction, split_seed: the carve of 'val' out of training.csv.
        crop_face: crop each image to its ``face_x, face_y, face_width, face_height`` box. Off by
            default: the manually annotated images are already released as face crops, and the
            box mostly spans the whole image.
    """
    if num_classes not in (7, 8):
        raise ValueError(f"AffectNet has 7 or 8 classes, got num_classes={num_classes}")
    name = f"affectnet{num_classes}"
    check_split(split, name)
    root = require_dir(Path(root), "AffectNet root")
    images = require_dir(root / "Manually_Annotated_Images", "AffectNet images")
    csv_name = "validation.csv" if split == "test" else "training.csv"
    csv_file = require_file(root / csv_name, f"AffectNet {split} labels",
                            missing_split=split == "test")
    rel_paths, labels, boxes = _parse_csv(csv_file)

    # Protocol drops, counted so they are never silent.
    in_protocol = labels < num_classes
    notes = [f"{csv_name}: dropped {int((labels >= 8).sum())} rows with expression 8-10 "
             "(None, Uncertain, No-Face)"]
    if num_classes == 7:
        notes.append(f"{csv_name}: dropped {int((labels == 7).sum())} Contempt rows (AffectNet-7)")
    rows = np.flatnonzero(in_protocol)
    if split != "test":
        rows = rows[carve(labels[rows], split, val_fraction, split_seed)]
    paths = [str(images / rel_paths[i]) for i in rows]
    loader = _FaceBoxLoader(paths, boxes[rows]) if crop_face else None
    return finish_dataset(DATASET_SPECS[name].classes, labels[rows], paths, name=name, split=split,
                          skip_unreadable=skip_unreadable, notes=notes, loader=loader)
