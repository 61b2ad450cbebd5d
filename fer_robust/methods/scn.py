"""SCN: the Self-Cure Network (Wang, Peng, Yang, Lu & Qiao, "Suppressing Uncertainties for
Large-Scale Facial Expression Recognition", CVPR 2020).

Three parts, on the baseline network with one more branch (:class:`~fer_robust.models.network.
SCNFER`):

1. **Self-attention importance weighting.** An FC layer and a sigmoid on the pooled feature give
   each image a weight ``alpha`` in (0, 1); the logits are ``alpha * linear(feature)``, so
   cross-entropy on them trains an uncertain image (small alpha) on a flatter softmax.
2. **Rank regularisation** (term ``rank_reg``). The batch is split by alpha into a high-importance
   group (the top ``beta`` share) and a low-importance group (the rest); the high group's mean
   weight must exceed the low group's by a margin ``delta1``::

       L_RR = max(0, delta1 - (mean_high alpha - mean_low alpha))

3. **Relabelling.** From a given epoch on, a sample whose top predicted probability beats the
   probability of its current label by more than ``delta2`` is relabelled to its top prediction
   (the new label trains it from then on)::

       relabel  if  max_c p_c - p_label > delta2,   new label = argmax_c p_c

What we followed (the authors' ``src/train.py``): beta = 0.7 (``int(B * beta)`` images in the
high group, by ``topk``), delta1 = 0.15, delta2 = 0.2, relabelling from their 1-based epoch 10 of
70; the loss ``CE(alpha * logits, label) + L_RR``; the relabelling decision on each training batch
from the softmax of the same step's (training-mode, importance-weighted) outputs, against the
sample's current label, written into the training labels at once; the importance-weighted logits at
evaluation too.

What we chose (each a config value under ``method.scn``, or the stage's loss weights):

- ``relabel_group``: ``low`` (default) relabels only the batch's low-importance group, as the paper
  (Sec. 3.4) and the benchmark issue describe; the released code relabels any sample of the batch
  (``all``).
- ``relabel_from_epoch`` is 0-based (9 = their epoch 10).
- The weight of L_RR is ``loss_weights.rank_reg`` (1 in the authors' code).
- A relabelled sample's label lives in ``SampleState.train_labels`` (its given label is kept for
  the reports), saved with every checkpoint, so ``--resume`` continues with the labels and
  decisions of the interrupted run. Each epoch's end writes ``samples/epoch_XXX.npz`` with the
  training labels after that epoch's relabelling and each image's last importance weight.
- Under several processes the groups and decisions are per process batch (the authors used one
  GPU); the decisions are gathered so every process trains on the same labels.
- With gradient accumulation, the groups are per forward batch, as the loss is.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fer_robust.config import Config, ConfigError
from fer_robust.methods.base import Method, register_method
from fer_robust.robust.metrics import hard_relabel_figures

__all__ = ["high_importance_mask", "rank_regularization", "relabel_decision", "SCNMethod"]


def high_importance_mask(importance: torch.Tensor, high_ratio: float) -> torch.Tensor:
    """``(B,)`` bool: the batch's ``int(B * high_ratio)`` most important samples (at least one and
    at most ``B - 1``, so both groups exist for ``B >= 2``)."""
    b = importance.shape[0]
    n_high = min(max(int(b * high_ratio), 1), max(b - 1, 1))
    mask = torch.zeros(b, dtype=torch.bool, device=importance.device)
    mask[torch.topk(importance.detach(), n_high).indices] = True
    return mask


def rank_regularization(importance: torch.Tensor, high_ratio: float,
                        margin: float) -> torch.Tensor:
    """SCN's rank regularisation ``max(0, margin - (mean_high - mean_low))`` of a batch's
    importance weights ``(B,)`` (0, with the graph kept, for a batch of one)."""
    if importance.shape[0] < 2:
        return importance.sum() * 0.0
    high = high_importance_mask(importance, high_ratio)
    gap = importance[high].mean() - importance[~high].mean()
    return torch.clamp(margin - gap, min=0.0)


def relabel_decision(prob: torch.Tensor, labels: torch.Tensor, margin: float,
                     may_relabel: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples SCN relabels and to what.

    Args:
        prob: ``(B, C)`` softmax of the step's outputs.
        labels: ``(B,)`` the labels the samples currently train on.
        margin: delta2.
        may_relabel: ``(B,)`` bool, the samples that may be relabelled (the low-importance group);
            ``None``: all.

    Returns:
        ``(relabel (B,) bool, top prediction (B,) int64)``: relabel where
        ``max_c p_c - p_label > margin`` (never to the current label, where the gap is 0).
    """
    p_max, pred = prob.max(dim=1)
    p_label = prob.gather(1, labels[:, None]).squeeze(1)
    relabel = (p_max - p_label) > margin
    if may_relabel is not None:
        relabel &= may_relabel
    return relabel, pred


@register_method("scn")
class SCNMethod(Method):
    """The Self-Cure Network on :class:`~fer_robust.models.network.SCNFER` (see the module
    docstring). Keeps each image's last importance weight (``(N,)``, NaN until seen) for the
    per-sample record; the labels live in the sample state."""
    loss_terms = ("ce", "rank_reg")
    archs = ("scn",)
    stage_kinds = ("warmup",)

    def __init__(self, cfg: Config, num_samples: int, num_classes: int) -> None:
        super().__init__(cfg, num_samples, num_classes)
        self.scn = cfg.method.scn
        self.importance = np.full(num_samples, np.nan, np.float32)

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        scn = cfg.method.scn
        if not 0.0 < scn.high_ratio < 1.0:
            raise ConfigError(f"'method.scn.high_ratio' must be in (0, 1), got {scn.high_ratio}")
        for key in ("rank_margin", "relabel_margin"):
            if not 0.0 <= getattr(scn, key) <= 1.0:
                raise ConfigError(f"'method.scn.{key}' must be in [0, 1], got {getattr(scn, key)}")
        if scn.relabel_from_epoch < 0:
            raise ConfigError("'method.scn.relabel_from_epoch' must be >= 0, got "
                              f"{scn.relabel_from_epoch}")

    def own_loss_terms(self, out: dict, labels: torch.Tensor, stage,
                       index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not stage.weight("rank_reg"):
            return {}
        return {"rank_reg": rank_regularization(out["importance"].float(), self.scn.high_ratio,
                                                self.scn.rank_margin)}

    @torch.no_grad()
    def after_step(self, out: dict, labels: torch.Tensor, index: torch.Tensor, epoch: int,
                   sample_state, gather: Callable) -> None:
        """Record the batch's importance weights and, from ``relabel_from_epoch`` on, relabel (on
        every process: the decisions of all processes' batches are gathered)."""
        importance = out["importance"].detach().float()
        relabel = torch.zeros_like(labels, dtype=torch.bool)
        pred = labels
        if epoch >= self.scn.relabel_from_epoch:
            may = (None if self.scn.relabel_group == "all"
                   else ~high_importance_mask(importance, self.scn.high_ratio))
            relabel, pred = relabel_decision(out["logits"].detach().float().softmax(1), labels,
                                             self.scn.relabel_margin, may)
        index, importance, relabel, pred = (t.cpu().numpy() for t in gather(
            (index, importance, relabel, pred)))
        self.importance[index] = importance
        sample_state.train_labels[index[relabel]] = pred[relabel]

    def end_epoch(self, epoch: int, sample_state) -> tuple[dict, dict[str, np.ndarray]]:
        """The relabelling's figures so far
        (:func:`~fer_robust.robust.metrics.hard_relabel_figures`; with the true labels, the mean
        importance of the changed and the unchanged labels), and the importance weights for
        ``samples/epoch_XXX.npz``."""
        figures = hard_relabel_figures(sample_state.given_labels, sample_state.train_labels,
                                       sample_state.true_labels)
        changed = sample_state.changed_mask
        seen = np.isfinite(self.importance)
        if changed is not None and (seen & changed).any() and (seen & ~changed).any():
            figures["importance_changed"] = float(self.importance[seen & changed].mean())
            figures["importance_unchanged"] = float(self.importance[seen & ~changed].mean())
        return figures, {"importance": self.importance.copy()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"importance": torch.from_numpy(self.importance.copy())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "importance" in state:
            self.importance = state["importance"].numpy().copy()
