"""The dataset contract every benchmark reader follows.

A :class:`FERDataset` holds, per sample, where its image comes from, its current label (possibly
noisy), its original label, and optionally the annotators' vote counts. ``__getitem__`` returns
``(image, label, index)``: the index lets every per-sample decision (loss, clean probability, soft
label) be stored in arrays indexed by dataset position and gathered across processes by index.
"""
from __future__ import annotations

import warnings
from typing import Callable, Iterable, Sequence

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from fer_robust.data.decode import DECODE_ERRORS, to_rgb

__all__ = ["FERDataset", "DatasetFormatError"]


class DatasetFormatError(ValueError):
    """A dataset on disk does not have the expected layout or content (names file and line)."""


class FERDataset(Dataset):
    """Images with integer labels over ``classes``.

    Args:
        classes: class names in the benchmark's official order.
        targets: ``(N,)`` int labels in ``[0, len(classes))``.
        paths: ``N`` identifiers; file paths for file-backed data, ``"<file>:<row>"`` otherwise.
        loader: ``loader(i) -> PIL.Image`` for sample ``i``; defaults to opening ``paths[i]``.
        votes: optional ``(N, C)`` annotator vote counts over ``classes`` (FERPlus).
        transform: applied to the RGB PIL image.
        name: benchmark name, for messages.
        skip_unreadable: if set, unreadable images were filtered at construction by the reader
            (the reader warns); at load time an unreadable image is always an error.
    """

    def __init__(self, classes: Sequence[str], targets: Sequence[int], paths: Sequence[str],
                 loader: Callable[[int], Image.Image] | None = None, votes: np.ndarray | None = None,
                 transform: Callable | None = None, name: str = "dataset", split: str = "train"):
        targets = np.asarray(targets, dtype=np.int64)
        if len(targets) == 0:
            raise DatasetFormatError(f"{name} {split}: the split is empty")
        if len(paths) != len(targets):
            raise ValueError(f"{name}: {len(paths)} paths for {len(targets)} targets")
        bad = np.flatnonzero((targets < 0) | (targets >= len(classes)))
        if bad.size:
            raise DatasetFormatError(f"{name} {split}: label {targets[bad[0]]} of {paths[bad[0]]} "
                                     f"is outside 0..{len(classes) - 1}")
        self.classes = list(classes)
        self.clean_targets = targets.copy()
        self.targets = targets.copy()
        self.paths = list(paths)
        self.votes = None if votes is None else np.asarray(votes, dtype=np.float32)
        self.transform = transform
        self.name = name
        self.split = split
        self._loader = loader
        self._cache: np.ndarray | None = None

    # -- contract -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.targets)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def decode_image(self, index: int) -> Image.Image:
        """Sample ``index`` decoded from its source as 8-bit RGB (:func:`~fer_robust.data.decode.
        to_rgb`); Pillow's errors pass through (see :data:`~fer_robust.data.decode.DECODE_ERRORS`)."""
        if self._loader is not None:
            return to_rgb(self._loader(index))
        with Image.open(self.paths[index]) as img:
            img.load()  # decode now, while the file is open (a truncated file fails here)
            return to_rgb(img)

    def load_image(self, index: int) -> Image.Image:
        """The RGB image of sample ``index`` (before transforms)."""
        if self._cache is not None:
            return Image.fromarray(self._cache[index])
        try:
            return self.decode_image(index)
        except DECODE_ERRORS as e:
            # Raised in a DataLoader worker too; the tools print it as this one line.
            raise DatasetFormatError(f"{self.name} {self.split}: cannot read image "
                                     f"{self.paths[index]}: {e}; data.verify_images=yes checks "
                                     "every image at start-up (data.skip_unreadable=true then "
                                     "drops the broken ones)") from None

    def __getitem__(self, index: int):
        img = self.load_image(index)
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[index]), index

    # -- labels -------------------------------------------------------------------------------
    def set_targets(self, targets: np.ndarray) -> None:
        """Replace the current (training) labels, e.g. with injected noise."""
        targets = np.asarray(targets, dtype=np.int64)
        if targets.shape != self.clean_targets.shape:
            raise ValueError(f"expected {self.clean_targets.shape} targets, got {targets.shape}")
        self.targets = targets.copy()

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.targets, minlength=self.num_classes)

    # -- speed --------------------------------------------------------------------------------
    def cache_in_memory(self, images: Iterable[np.ndarray] | None = None) -> None:
        """Hold every image decoded in one uint8 array (only for small, equal-sized images).

        ``images``: the dataset's images in order as RGB arrays, when the caller has decoded them
        already (the up-front decode check), so they are not decoded a second time."""
        if images is None:
            images = (np.asarray(self.load_image(i)) for i in range(len(self)))
        cache = None
        for i, arr in enumerate(images):
            if cache is None:
                cache = np.empty((len(self),) + arr.shape, dtype=np.uint8)
            elif arr.shape != cache.shape[1:]:
                warnings.warn(f"{self.name}: images differ in size; not caching in memory")
                return
            cache[i] = arr
        self._cache = cache

    def subset(self, indices: Sequence[int]) -> "FERDataset":
        """A new dataset holding only ``indices`` (labels, votes and paths follow)."""
        indices = np.asarray(indices, dtype=np.int64)
        loader = None if self._loader is None else _SubsetLoader(self._loader, indices)
        sub = FERDataset(self.classes, self.clean_targets[indices], [self.paths[i] for i in indices],
                         loader=loader, votes=None if self.votes is None else self.votes[indices],
                         transform=self.transform, name=self.name, split=self.split)
        sub.targets = self.targets[indices].copy()
        if self._cache is not None:
            sub._cache = self._cache[indices]
        return sub


class _SubsetLoader:
    """Picklable ``loader`` of a subset: maps subset positions to the parent's loader."""

    def __init__(self, parent: Callable[[int], Image.Image], indices: np.ndarray):
        self.parent, self.indices = parent, indices

    def __call__(self, i: int) -> Image.Image:
        return self.parent(int(self.indices[i]))
