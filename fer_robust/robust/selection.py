"""One robust-learning decision over the training set: GMM split, then retrieval relabelling.

Shared by the trainer's stages and ``tools/relabel.py``, so what a user inspects is exactly what
training does.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fer_robust.config import RelabelConfig, SplitConfig
from fer_robust.robust.gmm_split import class_dependent_split
from fer_robust.robust.retrieval import retrieval_soft_labels

__all__ = ["RobustDecision", "split_and_relabel"]


@dataclass
class RobustDecision:
    """Per-sample outcome (length N arrays).

    clean_prob / clean_mask: the class-dependent GMM split.
    soft_labels: ``(N, C)``; retrieval soft label for noisy samples, one-hot given label for clean.
    new_labels: argmax of ``soft_labels``.
    confidence: top soft-label probability.
    relabeled_mask: noisy samples that received a retrieval soft label.
    per_class: the split's per-class summary.
    """
    clean_prob: np.ndarray
    clean_mask: np.ndarray
    soft_labels: np.ndarray
    new_labels: np.ndarray
    confidence: np.ndarray
    relabeled_mask: np.ndarray
    per_class: list


def split_and_relabel(losses: np.ndarray, embeddings: np.ndarray, given_labels: np.ndarray,
                      num_classes: int, split_cfg: SplitConfig, relabel_cfg: RelabelConfig,
                      relabel: bool = True, probs: np.ndarray | None = None) -> RobustDecision:
    """Split by GMM on ``losses`` (per class or global, ``split_cfg.scope``); retrieve each noisy
    sample among the clean ones.

    Args:
        losses: ``(N,)`` per-sample losses (optionally smoothed over epochs by the caller).
        embeddings: ``(N, D)`` l2-normalised embeddings V.
        given_labels: ``(N,)`` the labels training was given.
        relabel: skip retrieval when False (self-paced stage).
        probs: ``(N, C)`` the model's softmax from the same pass; required when
            ``relabel_cfg.model_weight > 0``, which blends it into the retrieval soft label.

    With ``relabel_cfg.mix_given`` a relabelled sample's soft label keeps the share ``clean_prob``
    of its given label (see :class:`~fer_robust.config.RelabelConfig`).
    """
    n = len(given_labels)
    split = class_dependent_split(losses, given_labels, num_classes, split_cfg)
    clean_mask = np.asarray(split.clean_mask, bool)
    soft = np.zeros((n, num_classes), np.float32)
    soft[np.arange(n), given_labels] = 1.0
    relabeled = np.zeros(n, bool)
    noisy_idx = np.flatnonzero(~clean_mask)
    clean_idx = np.flatnonzero(clean_mask)
    if relabel and noisy_idx.size and clean_idx.size:
        result = retrieval_soft_labels(embeddings[noisy_idx], embeddings[clean_idx],
                                       given_labels[clean_idx], num_classes, relabel_cfg)
        retrieved = result.soft_labels
        w = relabel_cfg.model_weight
        if w > 0:
            if probs is None:
                raise ValueError("robust.relabel.model_weight > 0 needs the model's probabilities")
            retrieved = (1.0 - w) * retrieved + w * np.asarray(probs, np.float32)[noisy_idx]
        if relabel_cfg.mix_given:
            p = np.nan_to_num(np.asarray(split.clean_prob, np.float32)[noisy_idx, None])
            retrieved = p * soft[noisy_idx] + (1.0 - p) * retrieved
        soft[noisy_idx] = retrieved
        relabeled[noisy_idx] = True
    return RobustDecision(clean_prob=np.asarray(split.clean_prob, np.float32), clean_mask=clean_mask,
                          soft_labels=soft, new_labels=soft.argmax(1), confidence=soft.max(1),
                          relabeled_mask=relabeled, per_class=split.summary())
