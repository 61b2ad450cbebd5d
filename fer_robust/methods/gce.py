"""GCE: the generalised cross-entropy loss (Zhang & Sabuncu, "Generalized Cross Entropy Loss for
Training Deep Neural Networks with Noisy Labels", NeurIPS 2018), a loss-only peer.

    L_q(x, y) = (1 - p_y(x)^q) / q,        q in (0, 1]

As q -> 0 it tends to cross-entropy ``-log p_y``; at q = 1 it is the mean absolute error
``1 - p_y`` (up to a factor 2), which is robust to label noise but slow to fit. In between it keeps
most of CE's speed while bounding the loss (and the pull) of a sample the model disagrees with:
the gradient is ``p_y^q`` times CE's, so confidently contradicted (likely mislabelled) samples
weigh less.

What we followed: the loss as in the paper, on the softmax of the logits, with the paper's
q = 0.7, averaged over the batch (as the public reimplementation AlanChou/Truncated-Loss computes
it, ``(1 - Yg**q) / q``).

What we chose (each a config value):

- ``method.gce.q`` (0.7); ``q = 0`` is accepted and is cross-entropy exactly.
- The paper's *truncated* variant L_trunc (per-sample weights that prune samples whose loss
  exceeds L_q(k), k = 0.5; that reimplementation refreshes them every 10 epochs from epoch 40) is
  not implemented: the peer is the plain loss.
- It runs on the single-branch baseline network (``model.arch=baseline``), in warm-up stages
  (every sample on its given label), with the term ``gce`` in place of ``ce``.
- Computed as ``-expm1(q * log p_y) / q`` from ``log_softmax`` in float32, which is exact at
  small q where ``1 - p**q`` would cancel.
"""
from __future__ import annotations

import torch

from fer_robust.config import Config, ConfigError
from fer_robust.losses.classification import generalized_cross_entropy
from fer_robust.methods.base import Method, register_method

__all__ = ["generalized_cross_entropy", "GCEMethod"]


@register_method("gce")
class GCEMethod(Method):
    """Generalised cross-entropy on the baseline network (see the module docstring)."""
    loss_terms = ("gce",)
    archs = ("baseline",)
    stage_kinds = ("warmup",)

    def __init__(self, cfg: Config, num_samples: int, num_classes: int) -> None:
        super().__init__(cfg, num_samples, num_classes)
        self.q = cfg.method.gce.q

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        if not 0.0 <= cfg.method.gce.q <= 1.0:
            raise ConfigError(f"'method.gce.q' must be in [0, 1], got {cfg.method.gce.q}")

    def own_loss_terms(self, out: dict, labels: torch.Tensor, stage,
                       index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if not stage.weight("gce"):
            return {}
        return {"gce": generalized_cross_entropy(out["logits"], labels, self.q, reduction="mean")}
