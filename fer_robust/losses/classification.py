"""Classification losses on hard and soft labels, per sample, and a weighted mean.

Per-sample losses (``reduction='none'``) are what the robust stages need: the GMM split fits on them
and clean/noisy masks or confidences weight them.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

__all__ = ["cross_entropy", "generalized_cross_entropy", "soft_cross_entropy",
           "soft_generalized_cross_entropy", "weighted_mean"]


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return loss
    if reduction == "mean":
        return loss.mean() if loss.numel() else loss.sum()  # an empty batch gives 0, not NaN
    if reduction == "sum":
        return loss.sum()
    raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def _normalized_targets(logits: torch.Tensor, soft_targets: torch.Tensor) -> torch.Tensor:
    """``soft_targets`` in float32 with each row summing to 1 (rows of zeros stay zero)."""
    if logits.shape != soft_targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and soft_targets {tuple(soft_targets.shape)} differ")
    targets = soft_targets.float()
    return targets / targets.sum(1, keepdim=True).clamp_min(1e-12)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                  reduction: Literal["none", "mean", "sum"] = "none") -> torch.Tensor:
    """Cross-entropy with hard labels.

    Args:
        logits: (B, C).
        labels: (B,) int64 class indices.
        label_smoothing: as in :func:`torch.nn.functional.cross_entropy`.
        reduction: ``'none'`` gives (B,) per-sample losses.
    """
    loss = F.cross_entropy(logits.float(), labels, reduction="none", label_smoothing=label_smoothing)
    return _reduce(loss, reduction)


def generalized_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, q: float,
                              reduction: Literal["none", "mean", "sum"] = "none") -> torch.Tensor:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018): ``(1 - p_y^q) / q`` with
    ``p = softmax(logits)``.

    Its gradient is cross-entropy's times ``p_y^q``, so a sample the model confidently contradicts
    (likely mislabelled) pulls weakly; ``q = 0`` is cross-entropy exactly, ``q = 1`` the mean
    absolute error. Computed as ``-expm1(q log p_y) / q`` in float32, exact at small q where
    ``1 - p**q`` would cancel.

    Args:
        logits: (B, C).
        labels: (B,) int64 class indices.
        q: in ``[0, 1]``.
        reduction: ``'none'`` gives (B,) per-sample losses.
    """
    log_p = F.log_softmax(logits.float(), dim=1).gather(1, labels[:, None]).squeeze(1)   # (B,)
    loss = -log_p if q == 0 else -torch.expm1(q * log_p) / q
    return _reduce(loss, reduction)


def soft_generalized_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor, q: float,
                                   reduction: Literal["none", "mean", "sum"] = "none"
                                   ) -> torch.Tensor:
    """Generalised cross-entropy against a target distribution: ``sum_c t_c (1 - p_c^q) / q``,
    the expectation of :func:`generalized_cross_entropy` over the target's classes (``q = 0`` is
    :func:`soft_cross_entropy`). Each class's pull is cross-entropy's times ``p_c^q``, so target
    mass on a class the model finds unlikely weighs less.

    Args:
        logits: (B, C).
        soft_targets: (B, C) non-negative; rows renormalised as in :func:`soft_cross_entropy`.
        q: in ``[0, 1]``.
        reduction: ``'none'`` gives (B,) per-sample losses.
    """
    if q == 0:
        return soft_cross_entropy(logits, soft_targets, reduction)
    targets = _normalized_targets(logits, soft_targets)
    loss = (targets * -torch.expm1(q * F.log_softmax(logits.float(), dim=1)) / q).sum(1)
    return _reduce(loss, reduction)


def soft_cross_entropy(logits: torch.Tensor, soft_targets: torch.Tensor,
                       reduction: Literal["none", "mean", "sum"] = "none") -> torch.Tensor:
    """Cross-entropy against a target distribution: ``-sum_c t_c log softmax(z)_c``.

    Args:
        logits: (B, C).
        soft_targets: (B, C) non-negative; each row is renormalised to sum 1 (rows of zeros give a
            zero loss) so sharpened or truncated targets need no care from the caller.
        reduction: ``'none'`` gives (B,) per-sample losses.
    """
    targets = _normalized_targets(logits, soft_targets)
    # Computed in float32: log_softmax under fp16 autocast loses the small target probabilities.
    loss = -(targets * F.log_softmax(logits.float(), dim=1)).sum(1)
    return _reduce(loss, reduction)


def weighted_mean(loss: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_i w_i l_i / sum_i w_i``; a zero that keeps the graph when all weights are zero.

    Args:
        loss: (B,) per-sample losses.
        weights: (B,) non-negative weights (a bool mask works too).
    """
    weights = weights.to(loss.dtype)
    # No branch on the total (no device sync): with all-zero weights the numerator is a zero that
    # still carries the graph, so backward reaches every parameter.
    return (loss * weights).sum() / weights.sum().clamp_min(1e-12)
