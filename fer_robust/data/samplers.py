"""Training samplers whose order is a pure function of ``(seed, epoch)``.

accelerate wraps a loader's sampler in a per-process batch-sampler shard: every process iterates the
*whole* sampler and keeps its own slice of each batch. So the order must be identical on every
process and must not touch a global random state; and, for exact resumption, replaying epoch ``e``
after ``set_epoch(e)`` must give the same order. Each sampler here draws epoch ``e`` from
``numpy.random.default_rng([seed, e])``. accelerate's prepared loader calls ``set_epoch`` with its own
pass counter at the start of every pass; a trainer that resumes calls ``loader.set_epoch(epoch)``.

Samplers take the training labels at construction (the possibly noisy ones the model trains on).
"""
from __future__ import annotations

from typing import Iterator, Literal

import numpy as np
from torch.utils.data import Sampler

__all__ = ["EpochSeededSampler", "EpochShuffleSampler", "MinimalRandomResampler",
           "ClassBalancedSampler", "build_sampler"]


class EpochSeededSampler(Sampler[int]):
    """Base class: subclasses implement :meth:`indices_for_epoch`; iteration yields it for the
    current epoch (set by :meth:`set_epoch`)."""

    def __init__(self, seed: int):
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select which epoch's order the next ``__iter__`` yields."""
        self.epoch = int(epoch)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def indices_for_epoch(self) -> np.ndarray:
        """``(len(self),)`` int64 dataset indices in the order the current epoch visits them."""
        raise NotImplementedError

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices_for_epoch().tolist())

    def __len__(self) -> int:
        raise NotImplementedError


def _as_targets(targets: np.ndarray) -> np.ndarray:
    targets = np.asarray(targets, dtype=np.int64)
    if targets.ndim != 1 or len(targets) == 0:
        raise ValueError(f"targets must be a non-empty 1-D array, got shape {targets.shape}")
    if targets.min() < 0:
        raise ValueError("targets must be non-negative class indices")
    return targets


class EpochShuffleSampler(EpochSeededSampler):
    """Every index once per epoch, in a fresh random order per ``(seed, epoch)``."""

    def __init__(self, num_samples: int, seed: int):
        super().__init__(seed)
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = int(num_samples)

    def indices_for_epoch(self) -> np.ndarray:
        return self._rng().permutation(self.num_samples)

    def __len__(self) -> int:
        return self.num_samples


class MinimalRandomResampler(EpochSeededSampler):
    """ARM's minimal random resampling (MRR): oversample every class up to the largest one.

    Each epoch, every sample appears at least once, and each class ``c`` with ``n_c`` samples gets
    ``n_max - n_c`` extra draws from its own members, the fewest extra draws that balance the
    classes. The extra draws are as even as possible: ``(n_max - n_c) // n_c`` full copies of the
    class plus a random subset (without replacement) of the remainder, so no image is repeated more
    than one time above any other image of its class; which images are repeated changes every epoch.
    (The ARM paper describes MRR only in words; this is our reading, and duplicating by whole copies
    plus a random remainder is our choice.) The balanced list is then shuffled.

    An epoch has ``K * n_max`` samples, ``K`` being the number of classes present in ``targets``.
    """

    def __init__(self, targets: np.ndarray, seed: int):
        super().__init__(seed)
        self.targets = _as_targets(targets)
        self.class_members = [np.flatnonzero(self.targets == c)
                              for c in range(int(self.targets.max()) + 1)]
        self.class_members = [m for m in self.class_members if len(m)]
        self.max_count = max(len(m) for m in self.class_members)

    def indices_for_epoch(self) -> np.ndarray:
        rng = self._rng()
        chosen = []
        for members in self.class_members:
            extra = self.max_count - len(members)
            full_copies, remainder = divmod(extra, len(members))
            chosen.append(np.tile(members, 1 + full_copies))
            chosen.append(rng.choice(members, size=remainder, replace=False))
        return rng.permutation(np.concatenate(chosen))

    def __len__(self) -> int:
        return self.max_count * len(self.class_members)


class ClassBalancedSampler(EpochSeededSampler):
    """Draw ``num_samples`` indices with replacement, each with weight ``1 / count(its class)``.

    Every class is then equally likely per draw (the AffectNet convention, as torch's
    ``WeightedRandomSampler`` with those weights), but the draws depend only on ``(seed, epoch)``.
    ``num_samples`` defaults to the dataset size ``N``.
    """

    def __init__(self, targets: np.ndarray, seed: int, num_samples: int | None = None):
        super().__init__(seed)
        self.targets = _as_targets(targets)
        counts = np.bincount(self.targets)
        weights = 1.0 / counts[self.targets]
        self.probabilities = weights / weights.sum()
        self.num_samples = len(self.targets) if num_samples is None else int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")

    def indices_for_epoch(self) -> np.ndarray:
        return self._rng().choice(len(self.targets), size=self.num_samples, replace=True,
                                  p=self.probabilities)

    def __len__(self) -> int:
        return self.num_samples


def build_sampler(name: Literal["random", "mrr", "class_balanced"], targets: np.ndarray,
                  seed: int) -> EpochSeededSampler:
    """The training sampler called ``name`` (``data.sampler`` in the config).

    'random' gives an :class:`EpochShuffleSampler` rather than ``shuffle=True``, so that the order
    of every epoch, too, is reproducible and resumable by ``set_epoch``. Build the loader with
    ``sampler=...`` and ``shuffle=False``.
    """
    if name == "random":
        return EpochShuffleSampler(len(_as_targets(targets)), seed)
    if name == "mrr":
        return MinimalRandomResampler(targets, seed)
    if name == "class_balanced":
        return ClassBalancedSampler(targets, seed)
    raise ValueError(f"unknown sampler {name!r}; valid: random, mrr, class_balanced")
