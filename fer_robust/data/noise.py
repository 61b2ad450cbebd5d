"""Label noise injected into a training split, to study (and test) learning from noisy labels.

Five kinds, chosen by :class:`~fer_robust.config.NoiseConfig` ``type``; each is a function
registered by name with :func:`register_noise` (:data:`NOISE_KINDS` is the one list of valid
``data.noise.type`` values, and config validation asks it):

* ``none``: labels unchanged.
* ``symmetric``: exactly ``round(rate * N)`` samples, chosen uniformly at random, take a label drawn
  uniformly from the *other* ``C - 1`` classes (the convention of DR-FER and most FER noise studies:
  a flipped label is always wrong).
* ``asymmetric`` (pair flip): within every class ``c``, exactly ``round(rate * n_c)`` samples take
  the label ``confusable[c]``. Flipping a fixed fraction *per class* keeps the noise rate the same in
  every class (as Co-teaching's pair flip does), so small classes are not spared or swamped.
* ``annotator``: each image takes the vote of one annotator, drawn in proportion to its vote counts
  (FERPlus has ten taggers per image). ``rate`` is ignored: the disagreement rate is whatever the
  annotators' disagreement is (on FERPlus about 19% of images differ from the majority label).
* ``file``: not drawn but read, from ``data.noise.file``: a published noisy label list such as
  RUL's and EAC's RAF-DB ``noise01.txt`` (:mod:`fer_robust.data.noise_file`, which needs the
  dataset's images to match rows to samples; ``rate`` and ``seed`` are not used).

Everything is drawn from ``numpy.random.default_rng(cfg.seed)``: the same seed gives the same labels.
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np

from fer_robust.config import NoiseConfig
from fer_robust.utils import atomic_save_npz
from fer_robust.utils import register_in

__all__ = ["NOISE_KINDS", "register_noise", "inject_label_noise", "default_confusable",
           "save_noisy_labels", "load_noisy_labels"]

#: ``noisy = draw(targets, num_classes, rate, rng, votes, confusable)``: the new ``(N,)`` labels.
NoiseDraw = Callable[[np.ndarray, int, float, np.random.Generator, "np.ndarray | None",
                      "dict[int, int] | np.ndarray | None"], np.ndarray]
#: Every ``data.noise.type``: the function that draws it.
NOISE_KINDS: dict[str, NoiseDraw] = {}


def register_noise(kind: str) -> Callable[[NoiseDraw], NoiseDraw]:
    """Decorator registering a noise draw (see :data:`NoiseDraw`) as ``data.noise.type=kind``."""
    return register_in(NOISE_KINDS, "noise type", kind)


def default_confusable(num_classes: int) -> dict[int, int]:
    """The default pair-flip map ``c -> (c + 1) % C``."""
    return {c: (c + 1) % num_classes for c in range(num_classes)}


def inject_label_noise(targets: np.ndarray, num_classes: int, cfg: NoiseConfig,
                       votes: np.ndarray | None = None,
                       confusable: dict[int, int] | np.ndarray | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ``targets`` as ``cfg`` says.

    Args:
        targets: ``(N,)`` clean integer labels in ``[0, num_classes)``.
        num_classes: ``C``.
        cfg: noise type, rate and seed.
        votes: ``(N, C)`` annotator vote counts, needed by ``annotator`` only.
        confusable: for ``asymmetric``, the class each class is flipped to: a ``{class: class}``
            map (classes missing from it keep their labels) or a ``(C,)`` array such as
            ``DatasetSpec.confusable_targets()``. ``None`` means :func:`default_confusable`.

    Returns:
        ``(noisy_targets, changed_mask)``: ``(N,)`` int64 labels and ``(N,)`` bool, True where the
        noisy label differs from ``targets``.
    """
    targets = np.asarray(targets, dtype=np.int64)
    n = len(targets)
    if targets.ndim != 1:
        raise ValueError(f"targets must be 1-D, got shape {targets.shape}")
    if n and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets must lie in 0..{num_classes - 1}")
    if not 0.0 <= cfg.rate < 1.0:
        raise ValueError(f"noise rate must be in [0, 1), got {cfg.rate}")
    if cfg.type not in NOISE_KINDS:
        raise ValueError(f"unknown noise type {cfg.type!r}; valid: {', '.join(NOISE_KINDS)}")
    rng = np.random.default_rng(cfg.seed)
    noisy = NOISE_KINDS[cfg.type](targets, num_classes, cfg.rate, rng, votes, confusable)
    return noisy, noisy != targets


@register_noise("none")
def _unchanged(targets, num_classes, rate, rng, votes, confusable) -> np.ndarray:
    return targets.copy()


@register_noise("symmetric")
def _symmetric(targets, num_classes, rate, rng, votes, confusable) -> np.ndarray:
    if num_classes < 2:
        raise ValueError("symmetric noise needs at least 2 classes")
    n = len(targets)
    noisy = targets.copy()
    flip = rng.choice(n, size=round(rate * n), replace=False)
    # An offset in 1..C-1 (mod C) is uniform over the other classes and never the same class.
    noisy[flip] = (targets[flip] + rng.integers(1, num_classes, size=len(flip))) % num_classes
    return noisy


@register_noise("asymmetric")
def _asymmetric(targets, num_classes, rate, rng, votes, confusable) -> np.ndarray:
    if confusable is None:
        mapping = default_confusable(num_classes)
    elif isinstance(confusable, dict):
        mapping = {int(k): int(v) for k, v in confusable.items()}
    else:
        mapping = {c: int(v) for c, v in enumerate(np.asarray(confusable).tolist())}
    for src, dst in mapping.items():
        if not (0 <= src < num_classes and 0 <= dst < num_classes) or src == dst:
            raise ValueError(f"confusable map entry {src} -> {dst} must join two different "
                             f"classes in 0..{num_classes - 1}")
    noisy = targets.copy()
    for src in sorted(mapping):
        members = np.flatnonzero(targets == src)
        flip = rng.choice(members, size=round(rate * len(members)), replace=False)
        noisy[flip] = mapping[src]
    return noisy


@register_noise("annotator")
def _annotator(targets, num_classes, rate, rng, votes, confusable) -> np.ndarray:
    if votes is None:
        raise ValueError("noise type 'annotator' needs per-image annotator vote counts, and this "
                         "dataset has none (only FERPlus ships them); use 'symmetric' or "
                         "'asymmetric' noise instead")
    n = len(targets)
    votes = np.asarray(votes, dtype=np.float64)
    if votes.shape != (n, num_classes):
        raise ValueError(f"votes must have shape ({n}, {num_classes}), got {votes.shape}")
    totals = votes.sum(axis=1)
    if (votes < 0).any() or (totals <= 0).any():
        bad = int(np.flatnonzero((totals <= 0) | (votes < 0).any(axis=1))[0])
        raise ValueError(f"votes of sample {bad} are negative or all zero: {votes[bad].tolist()}")
    # Inverse-CDF draw, one uniform per image: the chosen tagger's vote.
    cdf = np.cumsum(votes / totals[:, None], axis=1)
    u = rng.random(n)[:, None]
    noisy = np.minimum((u >= cdf).sum(axis=1), num_classes - 1).astype(np.int64)
    # The draw above cannot land on a zero-vote class except through float round-off at the end.
    zero = votes[np.arange(n), noisy] <= 0
    noisy[zero] = votes[zero].argmax(axis=1)
    return noisy


@register_noise("file")
def _from_file(targets, num_classes, rate, rng, votes, confusable) -> np.ndarray:
    # Registered so that 'file' is a valid data.noise.type; the labels come from the file.
    raise ValueError("noise type 'file' is read, not drawn: "
                     "fer_robust.data.noise_file.noisy_targets_from_file(data_cfg, dataset)")


def save_noisy_labels(path: str | os.PathLike, noisy: np.ndarray, clean: np.ndarray,
                      changed: np.ndarray) -> None:
    """Write the injected labels (atomically) so a run's noise can be audited and reloaded."""
    noisy, clean, changed = (np.asarray(noisy, dtype=np.int64), np.asarray(clean, dtype=np.int64),
                             np.asarray(changed, dtype=bool))
    if not noisy.shape == clean.shape == changed.shape:
        raise ValueError(f"shapes differ: noisy {noisy.shape}, clean {clean.shape}, "
                         f"changed {changed.shape}")
    atomic_save_npz(path, noisy_targets=noisy, clean_targets=clean, changed_mask=changed)


def load_noisy_labels(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read a file written by :func:`save_noisy_labels`: ``(noisy, clean, changed)``."""
    with np.load(path) as f:
        missing = {"noisy_targets", "clean_targets", "changed_mask"} - set(f.files)
        if missing:
            raise ValueError(f"{path}: not a noisy-label file (missing {sorted(missing)})")
        return f["noisy_targets"].astype(np.int64), f["clean_targets"].astype(np.int64), \
            f["changed_mask"].astype(bool)
