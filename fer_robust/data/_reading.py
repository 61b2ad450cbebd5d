"""Checks and steps every benchmark reader shares: path checks, image existence, split carving."""
from __future__ import annotations

import os
import re
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.dataset_facts import SPLITS
from fer_robust.data.splits import stratified_split

__all__ = ["SplitNotFoundError", "IMAGE_EXTENSIONS", "check_split", "require_dir", "require_file",
           "refuse_duplicate_rows", "refuse_path_outside_root", "find_unreadable",
           "drop_unreadable", "carve", "finish_dataset"]

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class SplitNotFoundError(DatasetFormatError):
    """The folder or file a split comes from is absent (e.g. FERPlus ``FER2013Test/``)."""


def check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"{name}: unknown split {split!r}; expected one of {list(SPLITS)}")


def require_dir(path: Path, what: str, missing_split: bool = False) -> Path:
    """``path`` if it is a folder, else an error naming it (a split error if ``missing_split``)."""
    if not path.is_dir():
        err = SplitNotFoundError if missing_split else DatasetFormatError
        raise err(f"{what}: expected folder not found: {path}")
    return path


def require_file(path: Path, what: str, missing_split: bool = False) -> Path:
    """``path`` if it is a file, else an error naming it (a split error if ``missing_split``)."""
    if not path.is_file():
        err = SplitNotFoundError if missing_split else DatasetFormatError
        raise err(f"{what}: expected file not found: {path}")
    return path


def refuse_duplicate_rows(names: Sequence[str], lines: Sequence[int], label_file: Path) -> None:
    """Raise naming the second row of an image listed twice in ``label_file`` (a copied block of
    rows would count the image twice, in a split's counts and in training)."""
    first_line: dict[str, int] = {}
    for name, line in zip(names, lines):
        if name in first_line:
            raise DatasetFormatError(f"{label_file}:{line}: {name} is listed again (first at line "
                                     f"{first_line[name]}); remove the duplicate row")
        first_line[name] = line


def refuse_path_outside_root(rel_path: str, label_file: Path, line: int) -> str:
    """``rel_path``, an image path read from row ``line`` of ``label_file``, when it stays under
    the folder the reader joins it to; otherwise a :class:`DatasetFormatError` naming the file and
    row.

    A label file is input like any other: a row naming ``/srv/elsewhere/x.png`` or
    ``../../outside/x.png`` would otherwise be read, trained on, listed in ``relabel.csv`` and
    embedded in ``report.html``. So an absolute path and any ``..`` part are refused (``/`` and
    ``\\`` both count as separators). The check is on the path as written, not on where it
    resolves: a folder inside the root may be a symbolic link to another disk and stays readable.
    """
    parts = re.split(r"[/\\]", rel_path)
    if os.path.isabs(rel_path) or rel_path.startswith(("/", "\\")) or ".." in parts:
        shown = rel_path if len(rel_path) <= 160 else rel_path[:160] + "..."
        raise DatasetFormatError(f"{label_file}:{line}: image path {shown!r} leaves the dataset "
                                 "folder (an absolute path or a '..' part); a label file may only "
                                 "name images under the dataset's image folder")
    return rel_path


def find_unreadable(paths: Sequence[str]) -> np.ndarray:
    """Positions of ``paths`` that are missing or empty files.

    One ``os.scandir`` per folder instead of one ``stat`` per file: FERPlus's 28k images in one
    folder are checked in well under a second, even on network file systems.
    """
    by_dir: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(paths):
        by_dir[os.path.dirname(p)].append(i)
    bad: list[int] = []
    for folder, members in by_dir.items():
        try:
            # A zero-byte file is as unreadable as a missing one; entry.stat() is cached by scandir.
            present = {e.name for e in os.scandir(folder or ".")
                       if e.is_file() and e.stat().st_size > 0}
        except (FileNotFoundError, NotADirectoryError):
            present = set()
        bad.extend(i for i in members if os.path.basename(paths[i]) not in present)
    return np.sort(np.asarray(bad, dtype=np.int64))


def drop_unreadable(paths: Sequence[str], skip_unreadable: bool, name: str, split: str) -> np.ndarray:
    """Positions of ``paths`` to keep, after checking every image exists.

    Raises:
        DatasetFormatError: naming the first missing or empty image, unless ``skip_unreadable``,
            in which case a warning gives the count and the first 5 paths and they are dropped.
    """
    bad = find_unreadable(paths)
    if bad.size:
        first = [paths[i] for i in bad[:5]]
        if not skip_unreadable:
            more = f" (and {bad.size - 1} more)" if bad.size > 1 else ""
            raise DatasetFormatError(f"{name} {split}: image file missing or empty: {first[0]}{more}; "
                                     "set data.skip_unreadable=true to drop such images")
        warnings.warn(f"{name} {split}: skipping {bad.size} missing or empty image file(s); "
                      f"first: {first}", stacklevel=3)
    keep = np.ones(len(paths), dtype=bool)
    keep[bad] = False
    return np.flatnonzero(keep)


def carve(targets: np.ndarray, split: str, val_fraction: float, split_seed: int) -> np.ndarray:
    """Positions (into ``targets``) forming ``split`` ('train' or 'val') of a carved validation.

    The carve is made on the full label list, *before* unreadable images are dropped, so skipping a
    few broken files never moves other images between train and validation.
    """
    train_idx, val_idx = stratified_split(targets, val_fraction, split_seed)
    return val_idx if split == "val" else train_idx


def finish_dataset(classes: Sequence[str], targets: np.ndarray, paths: Sequence[str], *, name: str,
                   split: str, skip_unreadable: bool, check_files: bool = True, notes: list[str] | None = None,
                   **kwargs) -> FERDataset:
    """Check every image exists, drop the unreadable ones, and build the :class:`FERDataset`.

    Dropped rows leave ``targets``, ``paths``, ``votes`` and, if it has a ``select(keep)`` method,
    the per-sample ``loader`` alike. ``notes`` (protocol drops, skipped files) end up in
    ``dataset.notes`` so that nothing is dropped without a trace.
    """
    notes = list(notes or [])
    targets = np.asarray(targets, dtype=np.int64)
    if check_files and len(paths):
        keep = drop_unreadable(paths, skip_unreadable, name, split)
        if len(keep) < len(paths):
            notes.append(f"skipped {len(paths) - len(keep)} missing or empty image file(s)")
            targets = targets[keep]
            paths = [paths[i] for i in keep]
            if kwargs.get("votes") is not None:
                kwargs["votes"] = np.asarray(kwargs["votes"])[keep]
            loader = kwargs.get("loader")
            if loader is not None and hasattr(loader, "select"):
                kwargs["loader"] = loader.select(keep)
    if len(targets) == 0:
        raise DatasetFormatError(f"{name} {split}: the split is empty")
    ds = FERDataset(classes, targets, paths, name=name, split=split, **kwargs)
    ds.notes = notes
    return ds
