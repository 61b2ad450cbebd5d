"""FERPlus: FER2013 faces re-annotated by 10 crowd taggers each (Barsoum et al., ICMI 2016).

On-disk layout (what the FER+ repository's ``generate_training_data.py`` writes)::

    root/FER2013Train/label.csv + *.png   -> train
    root/FER2013Valid/label.csv + *.png   -> val
    root/FER2013Test/label.csv  + *.png   -> test

``label.csv`` has no header; each row is ``file name, "(x, y, w, h)", 10 vote counts`` over
neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF (not a face).

``ferplus`` is the FER+ protocol's 8 classes. ``ferplus7`` is the 7-class protocol EAC and RUL
report: the same majority vote over all 8 emotions, then the images whose label is contempt are
dropped (contempt is the last id, so the other ids stay as they are). Dropping the images rather
than the contempt votes leaves every other image with the label it has under ``ferplus``.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import DATASET_SPECS
from fer_robust.data._reading import (check_split, finish_dataset, refuse_duplicate_rows,
                                      refuse_path_outside_root, require_dir, require_file)

__all__ = ["read_ferplus", "ferplus_labels", "majority_vote", "FERPLUS_SPLIT_FOLDERS"]

FERPLUS_SPLIT_FOLDERS: dict[str, str] = {"train": "FER2013Train", "val": "FER2013Valid",
                                         "test": "FER2013Test"}
# 8 emotions + unknown + NF.
_NUM_VOTE_COLUMNS = 10
_NUM_EMOTIONS = 8


def majority_vote(votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The FER+ majority-vote protocol (FER+ paper; ``ferplus.py`` of the FER+ repository).

    1. an emotion with a single vote is an outlier: counts ``<= 1`` become 0;
    2. the image is kept only if its top class has more than half of the remaining votes
       (so a tie for the top is dropped, and so is an image with no vote left);
    3. an image whose top class is unknown or NF is dropped.

    Args:
        votes: ``(N, 10)`` vote counts, columns neutral..contempt, unknown, NF.

    Returns:
        ``(keep, labels)``: ``(N,)`` bool mask of kept images and ``(N,)`` int64 label in 0..7
        (meaningful where ``keep``).
    """
    votes = np.asarray(votes, dtype=np.float64)
    pruned = np.where(votes <= 1, 0.0, votes)
    top = pruned.max(axis=1)
    labels = pruned.argmax(axis=1)
    keep = (top > 0.5 * pruned.sum(axis=1)) & (labels < _NUM_EMOTIONS)
    return keep, labels.astype(np.int64)


def _parse_label_csv(label_file: Path) -> tuple[list[str], np.ndarray]:
    """File names and ``(N, 10)`` int vote counts, with errors naming the file and line."""
    names: list[str] = []
    rows: list[list[int]] = []
    lines: list[int] = []
    with open(label_file, newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            line = reader.line_num
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != 2 + _NUM_VOTE_COLUMNS:
                raise DatasetFormatError(f"{label_file}:{line}: expected 12 columns (file name, face "
                                         f"box, 10 vote counts), got {len(row)}")
            name = row[0].strip()
            if not name:
                raise DatasetFormatError(f"{label_file}:{line}: empty image file name")
            refuse_path_outside_root(name, label_file, line)
            try:
                values = [float(c) for c in row[2:]]
            except ValueError:
                raise DatasetFormatError(f"{label_file}:{line}: vote counts must be integers, "
                                         f"got {row[2:]}") from None
            # A vote is one tagger's: a fraction is not a count (truncating it would change the
            # majority), so it is refused rather than guessed at.
            if not all(v.is_integer() for v in values):
                raise DatasetFormatError(f"{label_file}:{line}: vote counts must be whole numbers "
                                         f"(one per tagger), got {[c.strip() for c in row[2:]]}")
            counts = [int(v) for v in values]
            if min(counts) < 0:
                raise DatasetFormatError(f"{label_file}:{line}: negative vote count in {counts}")
            names.append(name)
            rows.append(counts)
            lines.append(line)
    refuse_duplicate_rows(names, lines, label_file)
    return names, np.asarray(rows, dtype=np.int64).reshape(-1, _NUM_VOTE_COLUMNS)


def ferplus_labels(label_file: Path, num_classes: int = 8
                   ) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """The rows of ``label_file`` the protocol keeps: ``(names, labels, votes, notes)``.

    ``num_classes`` 8 is the FER+ majority vote (:func:`majority_vote`); 7 (``ferplus7``) then
    drops the images whose label is contempt. ``votes`` are the raw ``(N, num_classes)`` counts over
    the kept classes; ``notes`` count what was dropped.
    """
    if num_classes not in (7, _NUM_EMOTIONS):
        raise ValueError(f"FERPlus has 7 or 8 classes, got num_classes={num_classes}")
    names, votes = _parse_label_csv(label_file)
    keep, labels = majority_vote(votes)
    notes = [f"majority vote kept {int(keep.sum())} of {len(names)} rows of {label_file.name} "
             f"(dropped {len(names) - int(keep.sum())}: ambiguous, unknown or not a face)"]
    if num_classes == 7:
        contempt = keep & (labels == _NUM_EMOTIONS - 1)
        notes.append(f"dropped {int(contempt.sum())} contempt images (ferplus7)")
        keep &= ~contempt
    kept = np.flatnonzero(keep)
    return ([names[i] for i in kept], labels[kept],
            votes[kept, :num_classes].astype(np.float32), notes)


def read_ferplus(root: str | Path, split: str, *, skip_unreadable: bool = False,
                 num_classes: int = 8) -> FERDataset:
    """FERPlus ``split`` under the majority-vote protocol (:func:`majority_vote`).

    Gives 8 classes and 25,045 train / 3,191 val / 3,137 test images (``num_classes=7``:
    ``ferplus7``, contempt images dropped, see the module docstring). ``dataset.votes`` holds the
    *raw* ``(N, C)`` vote counts over the emotions (before single votes are zeroed; unknown and
    NF left out): they are what the taggers said, which is what soft targets and annotator noise
    sample from. ``dataset.notes`` records how many rows the protocol dropped.

    Raises:
        DatasetFormatError: missing root or ``label.csv``, a malformed row (file and line), a
            missing image (unless ``skip_unreadable``), or an empty split.
        SplitNotFoundError: the split's folder (e.g. ``FER2013Test``) is absent.
    """
    name = "ferplus" if num_classes == _NUM_EMOTIONS else f"ferplus{num_classes}"
    check_split(split, name)
    root = require_dir(Path(root), "FERPlus root")
    folder = require_dir(root / FERPLUS_SPLIT_FOLDERS[split], f"FERPlus {split}", missing_split=True)
    label_file = require_file(folder / "label.csv", f"FERPlus {split} labels")
    names, labels, votes, notes = ferplus_labels(label_file, num_classes)
    return finish_dataset(DATASET_SPECS[name].classes, labels, [str(folder / n) for n in names],
                          name=name, split=split, skip_unreadable=skip_unreadable, notes=notes,
                          votes=votes)
