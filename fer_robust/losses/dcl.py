"""Distribution contrastive loss (DCL, DR-FER).

Idea: a clean sample belongs to the class whose embedding *distribution* it disturbs least. Each
class c is summarised by the n_c clean embeddings currently known for it: mean ``mu_c`` and spread
``s_c = (1/n_c) sum_e ||e - mu_c||^2``. Adding an embedding v to class c gives

    mu'_c = mu_c + (v - mu_c) / (n_c + 1)
    s'_c  = n_c / (n_c + 1) * (s_c + ||v - mu_c||^2 / (n_c + 1))

A single added point moves these statistics by O(1/(n_c + 1)), so a raw shift would favour whichever
class has fewer stored samples. Both shifts are therefore multiplied by (n_c + 1), which makes them
independent of n_c to first order and comparable across classes of any size:

    (n_c + 1) * ||mu'_c - mu_c|| = ||v - mu_c||                                  (mean shift)
    (n_c + 1) * |s'_c - s_c|     = | n_c / (n_c + 1) * ||v - mu_c||^2 - s_c |      (spread shift)

    d_c(v) = ||v - mu_c|| + lambda * | n_c / (n_c + 1) * ||v - mu_c||^2 - s_c |

with ``lambda = cfg.spread_weight``. The loss contrasts the shift of the sample's own class y against
those of the other classes, as a softmax over negative shifts:

    L = (1 / |B_clean|) * sum_{i clean} CrossEntropy( -d(v_i) / tau , y_i ),   tau = cfg.temperature

Classes with no stored embedding are left out of the softmax (logit -inf); a sample whose own class
has none is left out of the mean. The class statistics are detached: the gradient flows to v only.

Where the statistics come from (a choice the paper leaves open):

* ``cfg.memory_per_class > 0``: a per-class FIFO memory of clean embeddings, held in registered
  buffers (so it is saved in ``state_dict`` and restored on resume). The trainer calls
  :meth:`DistributionContrastiveLoss.update_memory` after each step with the *gathered* (all
  processes), detached clean embeddings of the step, so every process holds the same memory.
* ``cfg.memory_per_class == 0``: the clean samples of the current batch, leave-one-out for the
  sample's own class (a sample is never compared with a distribution that already contains it).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from fer_robust.config import DCLConfig

__all__ = ["DistributionContrastiveLoss", "distribution_shift"]


def distribution_shift(embeddings: torch.Tensor, means: torch.Tensor, spreads: torch.Tensor,
                       counts: torch.Tensor, spread_weight: float = 1.0) -> torch.Tensor:
    """Scale-free shift ``d_c(v)`` of each class distribution when v is added (see module doc).

    Args:
        embeddings: (B, D) the embeddings v.
        means: (C, D) or (B, C, D) class means mu_c (per sample when leave-one-out).
        spreads: (C,) or (B, C) class spreads s_c.
        counts: (C,) or (B, C) class sizes n_c (floats).
        spread_weight: lambda.

    Returns:
        (B, C) shifts d_c(v) >= 0.
    """
    diff = embeddings[:, None, :] - means                                  # (B, C, D)
    sq_dist = diff.pow(2).sum(-1)                                          # ||v - mu_c||^2, (B, C)
    # eps keeps the sqrt's gradient finite when v sits exactly on a class mean.
    mean_shift = torch.sqrt(sq_dist + 1e-12)
    spread_shift = (counts / (counts + 1.0) * sq_dist - spreads).abs()
    return mean_shift + spread_weight * spread_shift


class DistributionContrastiveLoss(nn.Module):
    """Distribution contrastive loss on clean samples (formula in the module docstring).

    Args:
        num_classes: C.
        embed_dim: D, the embedding size (V = l2norm(concat(L, G)) in the two-branch model).
        cfg: :class:`~fer_robust.config.DCLConfig` (temperature, memory_per_class, spread_weight).

    Buffers (all in ``state_dict``):
        memory: (C, M, D) float32 stored clean embeddings, ring buffer per class.
        memory_count: (C,) int64 filled slots per class (<= M).
        memory_ptr: (C,) int64 next slot to overwrite per class.
    """

    def __init__(self, num_classes: int, embed_dim: int, cfg: DCLConfig):
        super().__init__()
        if cfg.temperature <= 0:
            raise ValueError(f"DCL temperature must be > 0, got {cfg.temperature}")
        self.num_classes = num_classes
        self.embed_dim = embed_dim
        self.temperature = cfg.temperature
        self.spread_weight = cfg.spread_weight
        self.memory_per_class = max(0, cfg.memory_per_class)
        self.register_buffer("memory", torch.zeros(num_classes, self.memory_per_class, embed_dim))
        self.register_buffer("memory_count", torch.zeros(num_classes, dtype=torch.long))
        self.register_buffer("memory_ptr", torch.zeros(num_classes, dtype=torch.long))

    @property
    def uses_memory(self) -> bool:
        return self.memory_per_class > 0

    @torch.no_grad()
    def update_memory(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        """Push clean embeddings into their classes' FIFO memories (oldest overwritten first).

        Call with the clean embeddings of a step gathered from all processes (same tensor, same
        order everywhere), so the memories stay identical across processes without extra syncs.

        Args:
            embeddings: (N, D), detached here.
            labels: (N,) int64 their (given) labels.
        """
        if not self.uses_memory or embeddings.shape[0] == 0:
            return
        if embeddings.shape[1] != self.embed_dim:
            raise ValueError(f"expected embeddings of dim {self.embed_dim}, got {embeddings.shape[1]}")
        embeddings = embeddings.detach().to(self.memory.device, torch.float32)
        labels = labels.to(self.memory.device)
        size = self.memory_per_class
        for c in labels.unique().tolist():
            new = embeddings[labels == c][-size:]   # only the newest M can survive
            num_new = new.shape[0]
            ptr = int(self.memory_ptr[c])
            slots = (ptr + torch.arange(num_new, device=new.device)) % size
            self.memory[c, slots] = new
            self.memory_ptr[c] = (ptr + num_new) % size
            self.memory_count[c] = min(int(self.memory_count[c]) + num_new, size)

    def reset_memory(self) -> None:
        """Forget every stored embedding (e.g. when a new stage changes the representation)."""
        self.memory.zero_()
        self.memory_count.zero_()
        self.memory_ptr.zero_()

    @torch.no_grad()
    def memory_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class statistics from the memory: counts (C,) float, means (C, D), spreads (C,)."""
        counts = self.memory_count.float()                                         # (C,)
        valid = (torch.arange(self.memory_per_class, device=counts.device)[None, :]
                 < self.memory_count[:, None]).float()                             # (C, M)
        denom = counts.clamp_min(1.0)
        means = (self.memory * valid[..., None]).sum(1) / denom[:, None]           # (C, D)
        sq_dist = (self.memory - means[:, None, :]).pow(2).sum(-1)                 # (C, M)
        spreads = (sq_dist * valid).sum(1) / denom                                 # (C,)
        return counts, means, spreads

    @staticmethod
    @torch.no_grad()
    def _batch_stats_leave_one_out(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int
                                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample class statistics from the batch, without the sample itself in its own class.

        Returns counts (B, C), means (B, C, D), spreads (B, C).
        """
        one_hot = F.one_hot(labels, num_classes).float()                           # (B, C)
        class_count = one_hot.sum(0)                                               # (C,)
        class_sum = one_hot.T @ embeddings                                         # (C, D)
        class_sq = one_hot.T @ embeddings.pow(2).sum(1)                            # (C,)
        counts = class_count[None, :] - one_hot                                    # (B, C)
        sums = class_sum[None] - one_hot[..., None] * embeddings[:, None, :]       # (B, C, D)
        sq = class_sq[None, :] - one_hot * embeddings.pow(2).sum(1, keepdim=True)  # (B, C)
        denom = counts.clamp_min(1.0)
        means = sums / denom[..., None]
        # s = E||e||^2 - ||mu||^2, clamped against rounding below zero.
        spreads = (sq / denom - means.pow(2).sum(-1)).clamp_min(0.0)
        return counts, means, spreads

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                clean_mask: torch.Tensor | None = None) -> torch.Tensor:
        """DCL over the clean samples of a batch.

        Args:
            embeddings: (B, D) embeddings V (gradient flows to them).
            labels: (B,) int64 given labels.
            clean_mask: (B,) bool, True for samples the split called clean; None = all.

        Returns:
            Scalar loss; a zero that keeps the graph when no clean sample can be scored.
        """
        if clean_mask is None:
            clean_mask = torch.ones_like(labels, dtype=torch.bool)
        v = embeddings[clean_mask].float()                                         # (B', D)
        y = labels[clean_mask]
        zero = embeddings.sum() * 0.0
        if v.shape[0] == 0:
            return zero
        if self.uses_memory:
            counts, means, spreads = self.memory_stats()
            counts_per_sample = counts[None, :].expand(v.shape[0], -1)             # (B', C)
        else:
            counts, means, spreads = self._batch_stats_leave_one_out(v.detach(), y, self.num_classes)
            counts_per_sample = counts
        shift = distribution_shift(v, means, spreads, counts, self.spread_weight)  # (B', C)
        available = counts_per_sample > 0
        logits = (-shift / self.temperature).masked_fill(~available, float("-inf"))
        scorable = available.gather(1, y[:, None]).squeeze(1)                      # own class known
        if not bool(scorable.any()):
            return zero
        loss = F.cross_entropy(logits[scorable], y[scorable])
        return loss + zero
