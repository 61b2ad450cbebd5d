"""One robust-learning decision over the training set: GMM split, then retrieval relabelling.

:func:`split_and_relabel` is the one decision function: the trainer's robust stages and
``tools/relabel.py`` both call it, so what a user inspects is exactly what training does. It
applies every setting that shapes the decision: the loss-history window
(``robust.split.loss_window``, through the :class:`~fer_robust.robust.gmm_split.LossHistory` the
caller keeps), the split, the retrieval and the confidence floor
(``robust.relabel.min_confidence``), and the dataset-level gate (``robust.noise_gate``, through the
:class:`~fer_robust.robust.noise_rate.NoiseGate` the caller keeps), which takes the labels as
clean when the first robust pass estimates little noise.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fer_robust.config import RelabelConfig, SplitConfig
from fer_robust.robust.gmm_split import LossHistory, class_dependent_split, split_losses
from fer_robust.robust.noise_rate import NoiseGate
from fer_robust.robust.retrieval import retrieval_soft_labels

__all__ = ["RobustDecision", "split_and_relabel"]


@dataclass
class RobustDecision:
    """Per-sample outcome (length N arrays).

    clean_prob / clean_mask: the class-dependent GMM split.
    soft_labels: ``(N, C)``; the retrieval soft label of every sample that received one
        (``retrieved_mask``), the one-hot given label for the others.
    new_labels: ``(N,)`` the label each sample is left with: the argmax of its soft label where it
        is relabelled, its given label elsewhere.
    confidence: ``(N,)`` top soft-label probability.
    retrieved_mask: noisy samples that received a retrieval soft label.
    relabeled_mask: the retrieved samples whose confidence reaches
        ``robust.relabel.min_confidence``: they train on their soft label. A noisy sample that is
        not relabelled trains on nothing.
    per_class: the split's per-class summary.
    noise_rate_estimate: the pass's estimated share of wrong labels (NaN when not estimated).
    labels_taken_as_clean: the gate took the labels as clean: every sample is clean and nothing
        is relabelled.
    """
    clean_prob: np.ndarray
    clean_mask: np.ndarray
    soft_labels: np.ndarray
    new_labels: np.ndarray
    confidence: np.ndarray
    retrieved_mask: np.ndarray
    relabeled_mask: np.ndarray
    per_class: list
    noise_rate_estimate: float = math.nan
    labels_taken_as_clean: bool = False

    @classmethod
    def build(cls, clean_prob: np.ndarray, clean_mask: np.ndarray, soft_labels: np.ndarray,
              given_labels: np.ndarray, retrieved_mask: np.ndarray, relabeled_mask: np.ndarray,
              per_class: list | None = None) -> "RobustDecision":
        """A decision from its parts; ``new_labels`` and ``confidence`` are derived from them."""
        relabeled_mask = np.asarray(relabeled_mask, bool)
        return cls(clean_prob=clean_prob, clean_mask=clean_mask, soft_labels=soft_labels,
                   new_labels=np.where(relabeled_mask, soft_labels.argmax(1), given_labels),
                   confidence=soft_labels.max(1), retrieved_mask=np.asarray(retrieved_mask, bool),
                   relabeled_mask=relabeled_mask, per_class=per_class or [])

    @classmethod
    def selection_only(cls, clean_mask: np.ndarray, given_labels: np.ndarray,
                       num_classes: int) -> "RobustDecision":
        """A split with no relabelling: the samples of ``clean_mask`` train on their given label,
        the others on nothing (``clean_prob`` is 1 or 0)."""
        clean_mask = np.asarray(clean_mask, bool)
        given_labels = np.asarray(given_labels, np.int64)
        none = np.zeros(len(given_labels), bool)
        return cls.build(clean_mask.astype(np.float32), clean_mask,
                         np.eye(num_classes, dtype=np.float32)[given_labels], given_labels, none,
                         none)

    @classmethod
    def from_sample_arrays(cls, arrays: dict[str, np.ndarray]) -> "RobustDecision":
        """The decision a saved per-sample state holds (``samples/epoch_XXX.npz``, written after
        :meth:`~fer_robust.engine.sample_state.SampleState.apply_decision`, which keeps the soft
        labels of the retrieved samples and zeros elsewhere). The split's per-class summary is not
        saved."""
        given = np.asarray(arrays["given_labels"], np.int64)
        saved = np.asarray(arrays["soft_labels"], np.float32)
        retrieved = saved.sum(1) > 0
        soft = np.where(retrieved[:, None], saved,
                        np.eye(saved.shape[1], dtype=np.float32)[given]).astype(np.float32)
        return cls.build(np.asarray(arrays["clean_prob"], np.float32),
                         np.asarray(arrays["clean_mask"], bool), soft, given, retrieved,
                         arrays["relabeled_mask"])

    @property
    def targets(self) -> np.ndarray:
        """``(N, C)`` the label distribution each sample is left with: its soft label where it is
        relabelled, the one-hot ``new_labels`` elsewhere."""
        onehot = np.eye(self.soft_labels.shape[1], dtype=np.float32)[self.new_labels]
        return np.where(self.relabeled_mask[:, None], self.soft_labels, onehot)


def split_and_relabel(losses: np.ndarray, embeddings: np.ndarray, given_labels: np.ndarray,
                      num_classes: int, split_cfg: SplitConfig, relabel_cfg: RelabelConfig,
                      relabel: bool = True, probs: np.ndarray | None = None,
                      history: LossHistory | None = None,
                      noise_gate: NoiseGate | None = None) -> RobustDecision:
    """Split by GMM on ``losses`` (per class or global, ``split_cfg.scope``); retrieve each noisy
    sample among the clean ones; relabel those whose soft label is confident enough.

    Args:
        losses: ``(N,)`` this pass's per-sample losses.
        embeddings: ``(N, D)`` l2-normalised embeddings V.
        given_labels: ``(N,)`` the labels training was given.
        relabel: skip retrieval when False (self-paced stage).
        probs: ``(N, C)`` the model's softmax from the same pass; required when
            ``relabel_cfg.model_weight > 0``, which blends it into the retrieval soft label, and
            when ``split_cfg.loss`` is ``class_relative``.
        history: the loss vectors of the earlier passes, with the window
            ``split_cfg.loss_window``: this pass's split values (``split_cfg.loss``) are appended to
            it and the split fits on the mean over the window. ``None`` means no earlier pass: the
            split fits on ``losses``.
        noise_gate: the run's gate (``robust.noise_gate``): it estimates this pass's noise rate
            from ``probs`` (keeping the first pass's as the run's reading), and while that reading
            is below its threshold every sample is clean and nothing is relabelled. The loss
            history is updated either way.

    With ``relabel_cfg.mix_given`` a relabelled sample's soft label keeps the share ``clean_prob``
    of its given label, and at least ``relabel_cfg.given_floor`` of it with or without
    ``mix_given`` (see :class:`~fer_robust.config.RelabelConfig`). A retrieved sample is
    relabelled when its soft label's top probability reaches ``relabel_cfg.min_confidence``.
    """
    n = len(given_labels)
    losses = split_losses(losses, probs, given_labels, split_cfg)
    if history is not None:
        if history.window != split_cfg.loss_window:
            raise ValueError(f"the loss history keeps {history.window} passes, "
                             f"robust.split.loss_window is {split_cfg.loss_window}")
        losses = history.update(losses)
    estimate = math.nan
    if noise_gate is not None:
        if probs is None:
            raise ValueError("robust.noise_gate needs the model's probabilities")
        estimate = noise_gate.observe(probs, given_labels)
        if noise_gate.labels_look_clean:
            decision = RobustDecision.selection_only(np.ones(n, bool), given_labels, num_classes)
            decision.noise_rate_estimate, decision.labels_taken_as_clean = estimate, True
            return decision
    split = class_dependent_split(losses, given_labels, num_classes, split_cfg)
    clean_mask = np.asarray(split.clean_mask, bool)
    soft = np.zeros((n, num_classes), np.float32)
    soft[np.arange(n), given_labels] = 1.0
    retrieved_mask = np.zeros(n, bool)
    noisy_idx = np.flatnonzero(~clean_mask)
    clean_idx = np.flatnonzero(clean_mask)
    if relabel and noisy_idx.size and clean_idx.size:
        w = relabel_cfg.model_weight
        if w > 0 and probs is None:
            raise ValueError("robust.relabel.model_weight > 0 needs the model's probabilities")
        if w >= 1.0:  # the model's prediction alone: no retrieval to run
            retrieval = np.asarray(probs, np.float32)[noisy_idx].copy()
        else:
            retrieval = retrieval_soft_labels(embeddings[noisy_idx], embeddings[clean_idx],
                                              given_labels[clean_idx], num_classes,
                                              relabel_cfg).soft_labels
            if w > 0:
                retrieval = (1.0 - w) * retrieval + w * np.asarray(probs, np.float32)[noisy_idx]
        if relabel_cfg.mix_given or relabel_cfg.given_floor > 0:
            p = np.zeros((noisy_idx.size, 1), np.float32)
            if relabel_cfg.mix_given:
                p = np.nan_to_num(np.asarray(split.clean_prob, np.float32)[noisy_idx, None])
            p = np.maximum(p, np.float32(relabel_cfg.given_floor))
            retrieval = p * soft[noisy_idx] + (1.0 - p) * retrieval
        soft[noisy_idx] = retrieval
        retrieved_mask[noisy_idx] = True
    # Only a confident soft label is trained on (robust.relabel.min_confidence).
    relabeled_mask = retrieved_mask & (soft.max(1) >= relabel_cfg.min_confidence)
    decision = RobustDecision.build(np.asarray(split.clean_prob, np.float32), clean_mask, soft,
                                    given_labels, retrieved_mask, relabeled_mask,
                                    per_class=split.summary())
    decision.noise_rate_estimate = estimate
    return decision
