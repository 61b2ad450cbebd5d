"""How noisy the training labels are as a whole, and the gate that reads it.

The split (:mod:`fer_robust.robust.gmm_split`) decides per image, and under clean labels it still
flags the hardest faces: on clean FERPlus a fifth of the images at every robust epoch, whose
relabelling cost the full system without this gate 1.75 points against cross-entropy
(docs/noise_benchmark.md, "Clean labels: what the split costs"). No per-image signal tells those
faces from wrong labels; a dataset-level one does.

:func:`estimate_noise_rate` is the anchor-point estimate of the label transition matrix (Patrini
et al., "Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach", CVPR
2017; Xia et al., NeurIPS 2019): for each class ``i`` the images the model scores highest for
``i`` (those at or above the ``quantile`` of ``p(i|x)`` over the training set, Patrini's 97th
percentile) stand for "surely class ``i``", and the mean ``p(i|x)`` over them estimates
``T_ii = P(given label i | true class i)``. A model trained on noisy labels before it memorises
them predicts the noisy posterior, so ``T_ii`` falls below 1 by the share of class ``i``'s labels
that were changed. The noise rate is ``1 - sum_i pi_i T_ii`` with ``pi_i`` the given labels'
class shares (a class with few images, whose anchors are mostly other classes' images, weighs as
little as its images do). The estimate also counts what the model cannot yet tell apart, so it is
not zero on clean labels: at the end of the FERPlus recipe's warm-up it reads 0.106 on clean
labels, 0.194 under one tagger's vote (19% of the labels differ from the majority) and 0.447
under 30% symmetric noise. On the whole training split one tagger's vote reads 0.111: that noise
sits on the ambiguous faces, while the anchors are the faces every tagger agrees on, of which a
model trained on more images is surer, so the estimate of such noise falls with the model's
strength (docs/noise_benchmark.md, "The noise gate at this size").

:class:`NoiseGate` (``robust.noise_gate``) reads the estimate of the first robust pass, made by
the model at the end of its warm-up before it fits any noise, and keeps that reading for the rest
of the run: when it is below ``threshold`` the labels are taken as clean, and every robust
decision trains every image on its given label (nothing flagged, nothing relabelled; the robust
stages keep their other terms). Deciding once rather than at every pass is a choice: later passes
read a model that has begun to fit the labels, whose estimates drift down under every setting
(annotator 0.194 at the first pass, 0.150 ten epochs later).
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["estimate_noise_rate", "NoiseGate"]


def estimate_noise_rate(probs: np.ndarray, given_labels: np.ndarray,
                        quantile: float = 0.97) -> float:
    """Anchor-point estimate of the share of wrong labels (see the module docstring).

    Args:
        probs: ``(N, C)`` the model's softmax over the training set.
        given_labels: ``(N,)`` the labels training was given.
        quantile: the anchors of class ``i`` are the images with ``p(i|x)`` at or above this
            quantile of ``p(i|x)`` over all N images.
    """
    probs = np.asarray(probs, np.float64)
    given_labels = np.asarray(given_labels, np.int64)
    if probs.ndim != 2 or len(probs) != len(given_labels) or len(probs) == 0:
        raise ValueError(f"probs must be (N, C) with N = {len(given_labels)} given labels, "
                         f"got shape {probs.shape}")
    if not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    num_classes = probs.shape[1]
    prior = np.bincount(given_labels, minlength=num_classes) / len(given_labels)
    t_diag = np.empty(num_classes)
    for c in range(num_classes):
        scores = probs[:, c]
        t_diag[c] = scores[scores >= np.quantile(scores, quantile)].mean()
    return float(1.0 - (prior * t_diag).sum())


class NoiseGate:
    """Takes the labels as clean when the first robust pass estimates little noise.

    Args:
        threshold: labels whose first estimate is below it are taken as clean (0 never does).
        quantile: :func:`estimate_noise_rate`'s anchor quantile.

    ``first_estimate`` is NaN until :meth:`observe` first runs; it is saved with every checkpoint
    (:meth:`state_dict`), so ``--resume`` and ``tools/relabel.py`` read the run's own reading.
    """

    def __init__(self, threshold: float = 0.0, quantile: float = 0.97):
        self.threshold = float(threshold)
        self.quantile = float(quantile)
        self.first_estimate = math.nan

    def observe(self, probs: np.ndarray, given_labels: np.ndarray) -> float:
        """This pass's estimate; the first one observed is kept as the run's reading."""
        estimate = estimate_noise_rate(probs, given_labels, self.quantile)
        if math.isnan(self.first_estimate):
            self.first_estimate = estimate
        return estimate

    @property
    def labels_look_clean(self) -> bool:
        """Whether the run's reading is below the threshold (False before the first reading)."""
        return not math.isnan(self.first_estimate) and self.first_estimate < self.threshold

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"first_estimate": torch.tensor(self.first_estimate, dtype=torch.float64)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the reading; a checkpoint written before the gate existed has none (NaN)."""
        value = state.get("first_estimate")
        self.first_estimate = math.nan if value is None else float(value)
