"""Seeded, stratified carving of a validation split out of a training split.

Most FER benchmarks publish no validation split (RAF-DB, AffectNet, SFEW): their official test or
validation set is what results are reported on, so model selection must happen on a part of the
training data instead. The carve is stratified (every class keeps its share), seeded (the same seed
gives the same split on every machine) and independent of file order on disk beyond the order the
reader produces (readers sort their rows deterministically).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["stratified_split"]


def stratified_split(targets: Sequence[int] | np.ndarray, val_fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split sample positions into disjoint train and validation sets, class by class.

    Each class ``c`` with ``n_c`` samples gives ``round(val_fraction * n_c)`` samples to validation,
    chosen by a permutation drawn from ``numpy.random.default_rng(seed)``. A class with a single
    sample therefore stays in train for fractions below 0.5 (its validation share rounds to zero);
    a class never gives *all* its samples away unless ``val_fraction`` is 1.

    Args:
        targets: ``(N,)`` integer class labels.
        val_fraction: share of each class moved to validation, in ``[0, 1]``.
        seed: seed of the permutation; a different seed gives a different split.

    Returns:
        ``(train_idx, val_idx)``: sorted ``int64`` positions into ``targets``; disjoint, and
        together they cover ``range(N)``.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    targets = np.asarray(targets, dtype=np.int64)
    rng = np.random.default_rng(seed)
    val_parts = []
    # Classes in sorted order so the rng stream is consumed identically on every run.
    for cls in np.unique(targets):
        members = np.flatnonzero(targets == cls)
        n_val = int(round(val_fraction * len(members)))
        if val_fraction < 1.0:
            n_val = min(n_val, len(members) - 1)
        val_parts.append(rng.permutation(members)[:n_val])
    val_idx = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    in_val = np.zeros(len(targets), dtype=bool)
    in_val[val_idx] = True
    return np.flatnonzero(~in_val).astype(np.int64), val_idx.astype(np.int64)
