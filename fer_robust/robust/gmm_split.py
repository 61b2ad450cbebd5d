"""Class-dependent GMM split of per-sample losses into clean and noisy (DR-FER's self-paced step).

DivideMix fits one two-component Gaussian mixture to all per-sample losses; DR-FER fits one per
class (by the given, possibly noisy label), because an easy class (Happiness) and a hard one (Fear)
have very different loss ranges and a global threshold would call most of the hard class noisy.

For each class ``c`` with samples ``I_c``:

1. normalise ``losses[I_c]`` (``'minmax'`` to [0, 1] within the class, or ``'none'``);
2. fit ``GaussianMixture(n_components=2)`` on shape ``(n_c, 1)``;
3. ``clean_prob`` = posterior of the component with the smaller mean; clean if ``> threshold``;
4. optionally (``cfg.monotone``) make ``clean_prob`` non-increasing in the loss.

Classes that cannot support their own mixture (fewer than ``cfg.min_class_size`` samples, or fewer
than two distinct loss values) use ``cfg.fallback``: ``'global'`` scores them with a mixture fitted on
all samples' losses (min-max normalised over the whole set), ``'clean'`` keeps them all.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from fer_robust.config import SplitConfig

__all__ = ["ClassSplitInfo", "SplitResult", "class_dependent_split", "fit_clean_posterior",
           "LossHistory", "class_relative_losses", "split_losses"]

# Loss ranges narrower than this are treated as "all identical": a mixture fitted on them would
# separate floating-point noise.
_DEGENERATE_RANGE = 1e-8


@dataclass
class ClassSplitInfo:
    """What the split did for one class (logged per pass so every decision can be audited)."""
    class_index: int
    n: int
    # Means of the (clean, noisy) components on the normalised scale; None without a class fit.
    means: tuple[float, float] | None
    clean_ratio: float
    # 'none' (own mixture), 'global' or 'clean' (cfg.fallback), 'empty' (no sample).
    fallback: str


@dataclass
class SplitResult:
    """Output of :func:`class_dependent_split`.

    Attributes:
        clean_prob: (N,) float32 posterior of the low-loss component.
        clean_mask: (N,) bool, ``clean_prob > threshold``.
        class_info: one :class:`ClassSplitInfo` per class, in class order.
    """
    clean_prob: np.ndarray
    clean_mask: np.ndarray
    class_info: list[ClassSplitInfo] = field(default_factory=list)

    def summary(self) -> list[dict]:
        """Per-class info as plain dicts (JSON-safe) for the run log."""
        return [asdict(info) for info in self.class_info]


def _normalize(values: np.ndarray, mode: str) -> np.ndarray:
    """Min-max normalise to [0, 1] (``'minmax'``) or return as float64 (``'none'``)."""
    values = values.astype(np.float64)
    if mode == "none":
        return values
    low, high = values.min(), values.max()
    if high - low < _DEGENERATE_RANGE:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _is_degenerate(values: np.ndarray) -> bool:
    return values.size < 2 or float(values.max() - values.min()) < _DEGENERATE_RANGE


def _make_monotone(values: np.ndarray, prob: np.ndarray, clean_mean: float) -> np.ndarray:
    """Make ``prob`` non-increasing in ``values``.

    Above the clean component's mean a running minimum removes the upturn in the noisy tail; below
    it a running maximum (from the mean leftwards) removes the dip at the lowest losses when the noisy
    component is the wider one. Both sides are then tied at the mean, so the whole curve decreases.
    """
    order = np.argsort(values, kind="stable")
    sorted_prob = prob[order]
    split = int(np.searchsorted(values[order], clean_mean, side="left"))
    right = np.minimum.accumulate(sorted_prob[split:])
    left = np.maximum.accumulate(sorted_prob[:split][::-1])[::-1]
    if right.size:
        left = np.maximum(left, right[0])
    out = np.empty_like(prob)
    out[order] = np.concatenate([left, right])
    return out


def fit_clean_posterior(values: np.ndarray, cfg: SplitConfig) -> tuple[np.ndarray, tuple[float, float]]:
    """Fit a two-component GMM on already normalised 1-D ``values`` and score each sample.

    Args:
        values: (n,) normalised losses, n >= 2 with at least two distinct values.
        cfg: split settings (``max_iter``, ``tol``, ``reg_covar``, ``seed``, ``monotone``).

    Returns:
        clean_prob: (n,) float64 posterior of the component with the smaller mean.
        means: (clean_mean, noisy_mean) on the normalised scale.
    """
    gmm = GaussianMixture(n_components=2, max_iter=cfg.max_iter, tol=cfg.tol,
                          reg_covar=cfg.reg_covar, random_state=cfg.seed)
    x = values.reshape(-1, 1)
    with warnings.catch_warnings():
        # DivideMix's max_iter=10 rarely converges to tol; the split is used as is, as in DivideMix.
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x)
        posterior = gmm.predict_proba(x)
    means = gmm.means_.reshape(-1)
    clean_component = int(np.argmin(means))
    prob = posterior[:, clean_component]
    if cfg.monotone:
        prob = _make_monotone(values, prob, float(means[clean_component]))
    return prob, (float(means[clean_component]), float(means[1 - clean_component]))


def class_relative_losses(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``max(0, -log(p_y / tau_y))`` per sample (``robust.split.loss=class_relative``).

    ``tau_c`` is the mean probability of class ``c`` over the samples whose prediction is ``c``:
    how sure the model typically is when it recognises that class. A clean sample of a hard class
    (tau 0.3) with p_y = 0.3 scores 0, like a clean sample of an easy class (tau 0.9) with
    p_y = 0.9; a sample whose given label the model gives 0.01 scores about 3.4 in either.
    A class the pass never predicts has ``tau = 1`` (no evidence the model recognises it): its
    samples score their plain cross-entropy. Nothing here reads the given labels' class counts,
    so a class whose given labels are mostly wrong does not set its own reference.

    Args:
        probs: ``(N, C)`` softmax of the pass.
        labels: ``(N,)`` given labels.
    """
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels, np.int64)
    num_classes = probs.shape[1]
    pred = probs.argmax(1)
    tau = np.ones(num_classes)
    for c in range(num_classes):
        if (pred == c).any():
            tau[c] = probs[pred == c, c].mean()
    p_y = probs[np.arange(len(labels)), labels]
    return np.maximum(0.0, np.log(tau[labels]) - np.log(np.maximum(p_y, 1e-12)))


def split_losses(losses: np.ndarray, probs: np.ndarray | None, labels: np.ndarray,
                 cfg: SplitConfig) -> np.ndarray:
    """The per-sample values the split fits on (``cfg.loss``): the pass's cross-entropy, or its
    class-relative form (:func:`class_relative_losses`, which needs ``probs``)."""
    if cfg.loss == "ce":
        return np.asarray(losses)
    if probs is None:
        raise ValueError("robust.split.loss=class_relative needs the pass's probabilities")
    return class_relative_losses(probs, labels)


def class_dependent_split(losses: np.ndarray, labels: np.ndarray, num_classes: int,
                          cfg: SplitConfig) -> SplitResult:
    """Split samples into clean and noisy with one two-component GMM per (given) class.

    With ``cfg.scope == 'global'`` one GMM over all losses scores every class instead.

    Args:
        losses: (N,) per-sample losses (e.g. CE against the given label, optionally smoothed by
            :class:`LossHistory`). Non-finite losses are treated as the largest finite loss.
        labels: (N,) int given labels in ``[0, num_classes)``.
        num_classes: C.
        cfg: :class:`~fer_robust.config.SplitConfig`.

    Returns:
        :class:`SplitResult` with clean_prob (N,) float32, clean_mask (N,) bool and per-class info.
        The same inputs and ``cfg.seed`` give the same result.
    """
    losses = np.asarray(losses, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if losses.shape != labels.shape:
        raise ValueError(f"losses {losses.shape} and labels {labels.shape} must have the same length")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    finite = np.isfinite(losses)
    if not finite.all():
        # A NaN/inf loss is no evidence of cleanliness: rank it with the worst finite loss.
        losses = np.where(finite, losses, losses[finite].max() if finite.any() else 0.0)

    n_total = losses.size
    clean_prob = np.ones(n_total, dtype=np.float64)
    min_size = max(cfg.min_class_size, 2)  # a two-component mixture needs two points at least

    global_prob: np.ndarray | None = None

    def global_posterior() -> np.ndarray:
        # Fitted lazily, once, only when some class needs the fallback.
        nonlocal global_prob
        if global_prob is None:
            values = _normalize(losses, cfg.normalize)
            global_prob = (np.ones(n_total) if _is_degenerate(values)
                           else fit_clean_posterior(values, cfg)[0])
        return global_prob

    info: list[ClassSplitInfo] = []
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        n = members.size
        if n == 0:
            info.append(ClassSplitInfo(c, 0, None, float("nan"), "empty"))
            continue
        values = _normalize(losses[members], cfg.normalize)
        if cfg.scope == "global":
            means, fallback = None, "global"
            prob = global_posterior()[members]
        elif n >= min_size and not _is_degenerate(values):
            prob, means = fit_clean_posterior(values, cfg)
            fallback = "none"
        else:
            means = None
            fallback = cfg.fallback
            prob = global_posterior()[members] if cfg.fallback == "global" else np.ones(n)
        clean_prob[members] = prob
        info.append(ClassSplitInfo(c, int(n), means, float(np.mean(prob > cfg.threshold)), fallback))

    clean_prob32 = clean_prob.astype(np.float32)
    return SplitResult(clean_prob=clean_prob32, clean_mask=clean_prob32 > cfg.threshold,
                       class_info=info)


class LossHistory:
    """Running window of per-sample loss vectors; the split fits on their mean.

    Averaging a sample's loss over the last ``window`` passes (DivideMix keeps a similar history)
    damps the epoch-to-epoch jitter of augmentation and learning-rate noise.

    Args:
        num_samples: N, the length of every loss vector (indexed by dataset index).
        window: how many past vectors to keep (``SplitConfig.loss_window``).
    """

    def __init__(self, num_samples: int, window: int = 1):
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.num_samples = int(num_samples)
        self.window = int(window)
        self._history: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._history)

    def update(self, losses: np.ndarray) -> np.ndarray:
        """Append one (N,) loss vector (dropping the oldest beyond ``window``); return the mean."""
        losses = np.asarray(losses, dtype=np.float32).reshape(-1)
        if losses.size != self.num_samples:
            raise ValueError(f"expected {self.num_samples} losses, got {losses.size}")
        self._history.append(losses.copy())
        del self._history[:-self.window]
        return self.mean()

    def mean(self) -> np.ndarray:
        """(N,) float32 mean over the stored vectors, ignoring NaN entries (samples not scored in a
        pass); NaN where a sample has no score at all."""
        if not self._history:
            raise RuntimeError("LossHistory is empty: call update() first")
        stacked = np.stack(self._history)
        counts = np.isfinite(stacked).sum(0)
        total = np.where(np.isfinite(stacked), stacked, 0.0).sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, total / np.maximum(counts, 1), np.nan).astype(np.float32)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Numpy state for resume: ``losses`` (T, N) oldest first and ``window``."""
        losses = (np.stack(self._history) if self._history
                  else np.zeros((0, self.num_samples), np.float32))
        return {"losses": losses, "window": np.asarray(self.window)}

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore from :meth:`state_dict` (keeps this object's window, trimming older rows)."""
        losses = np.asarray(state["losses"], dtype=np.float32)
        if losses.ndim != 2 or losses.shape[1] != self.num_samples:
            raise ValueError(f"expected losses of shape (T, {self.num_samples}), got {losses.shape}")
        self._history = [row.copy() for row in losses][-self.window:]
