"""The check that every image of a split decodes, run once when the split is built.

:func:`find_undecodable` decodes every image of a dataset once, fully (a truncated JPEG opens and
only fails when its pixels are read), and lists each failure with its reason;
:func:`check_decodable` raises or drops them (``data.skip_unreadable``). ``data.verify_images``
says when :func:`~fer_robust.data.registry.build_dataset` runs it: ``auto`` (splits of up to
:data:`AUTO_VERIFY_MAX_IMAGES` images, a few seconds even for FERPlus), ``yes`` or ``no``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from fer_robust.data.base import DatasetFormatError, FERDataset
from fer_robust.data.decode import DECODE_ERRORS

__all__ = ["AUTO_VERIFY_MAX_IMAGES", "Undecodable", "find_undecodable", "check_decodable",
           "should_verify"]

# data.verify_images=auto decodes every image of splits up to this size at start-up.
AUTO_VERIFY_MAX_IMAGES = 50_000


@dataclass(frozen=True)
class Undecodable:
    """An image that cannot be decoded: its position in the dataset, path and Pillow's reason."""
    index: int
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} ({self.reason})"


def find_undecodable(dataset: FERDataset, decoded: list | None = None) -> list[Undecodable]:
    """Decode every image of ``dataset`` once; the ones that fail, in dataset order. With
    ``decoded`` (a list) each image is appended to it as an RGB array (None where it fails)."""
    bad = []
    for i in range(len(dataset)):
        try:
            image = dataset.decode_image(i)
        except DECODE_ERRORS as e:
            bad.append(Undecodable(i, dataset.paths[i], str(e) or type(e).__name__))
            image = None
        if decoded is not None:
            decoded.append(None if image is None else np.asarray(image))
    return bad


def should_verify(setting: str, num_images: int) -> bool:
    """Whether ``data.verify_images=setting`` decodes a split of ``num_images`` at start-up."""
    return setting == "yes" or (setting == "auto" and num_images <= AUTO_VERIFY_MAX_IMAGES)


def check_decodable(dataset: FERDataset, skip_unreadable: bool,
                    cache: bool = False) -> FERDataset:
    """``dataset`` when every image decodes. Otherwise, with ``skip_unreadable``, the dataset
    without them (a warning and a note give the count and the first files); without it, a
    :class:`~fer_robust.data.base.DatasetFormatError` naming the first files and their reasons.
    With ``cache`` the returned dataset holds the images this one pass decoded
    (:meth:`~fer_robust.data.base.FERDataset.cache_in_memory`)."""
    decoded: list | None = [] if cache else None
    bad = find_undecodable(dataset, decoded)
    if not bad:
        if cache:
            dataset.cache_in_memory(decoded)
        return dataset
    where = f"{dataset.name} {dataset.split}"
    first = "; ".join(map(str, bad[:3])) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
    if not skip_unreadable:
        raise DatasetFormatError(f"{where}: {len(bad)} image(s) cannot be decoded: {first}. "
                                 "Replace or remove them, or set data.skip_unreadable=true to "
                                 "train without them (tools/data_summary.py --verify lists all)")
    warnings.warn(f"{where}: skipping {len(bad)} image(s) that cannot be decoded: {first}",
                  stacklevel=2)
    keep = np.setdiff1d(np.arange(len(dataset)), [b.index for b in bad])
    kept = dataset.subset(keep)
    kept.notes = [*getattr(dataset, "notes", []),
                  f"skipped {len(bad)} image(s) that cannot be decoded"]
    if cache:
        kept.cache_in_memory(a for a in decoded if a is not None)
    return kept
