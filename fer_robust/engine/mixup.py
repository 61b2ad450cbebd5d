"""Mixup in the robust stages (``robust.mixup_alpha``): each batch trains on convex mixtures of
its images, as DivideMix does (Li et al., ICLR 2020, after Zhang et al., "mixup", ICLR 2018).

Why: the split's clean set still holds wrongly labelled images (about one in eight under sym30 at
the end of the warm-up). Trained on at full weight with cross-entropy they are memorised within
ten epochs (99% of them predicted as their wrong label by the end under the benchmark recipe),
their loss falls, and every later split keeps them: the split confirms what the model memorised.
A mixed image's target is the same mixture of its two images' targets, so a single wrong label
cannot be fitted exactly without fitting its mixtures too; memorising it is slow, and the split
reads the unmixed images' losses, on which it stays visible. A bounded loss slows memorisation as
well (``robust.clean_loss_q``) but also stops the hard clean images being fitted, which the split
then flags; mixup does not down-weight any image.

What we chose (each a config value or written here):

- ``robust.mixup_alpha`` is the Beta(alpha, alpha) parameter of the mixing weight (0 = off).
  As DivideMix, the weight is ``lam = max(lam, 1 - lam)``, so each mixed image stays closest to
  its own image, whose label, clean flag and class statistics DCL and its memory then read.
- One weight per batch and the partner of image i is image B-1-i (timm's ``Mixup`` mixes with
  the reversed batch too; the loader's order is already random). The weight comes from a
  generator seeded by (run seed, epoch, process), so ``--resume`` at an epoch boundary repeats it.
- Every classification term keeps its own target and weight and is mixed as a loss:
  ``lam * term(targets of i) + (1 - lam) * term(targets of the partner)``: the clean set's hard
  label, the relabelled set's soft label, each with its ``ce_weight``/``soft_weight``. (timm's
  ``Mixup`` instead builds one mixed soft target, which cannot carry the terms' separate weights.)
- Only the robust stages mix: the warm-up, which ends before cross-entropy fits the noise, and the
  per-sample pass that the split and relabelling read are un-mixed, so a branch from the end of
  the warm-up may switch it on. MIM reconstructs the mixed image. Once the noise gate takes the
  labels as clean, the robust batches are un-mixed too (``robust.noise_gate.keep_mixup``).
- The per-epoch ``train_accuracy_given``/``memorised_share`` count the mixed batch's prediction
  against the dominant image's label; the final figures are measured on un-mixed images.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["BatchMixer", "mix_images"]


def mix_images(images: torch.Tensor, lam: float) -> torch.Tensor:
    """``lam * images + (1 - lam) * images`` in reversed batch order (the partner of image i is
    image B-1-i)."""
    return images.mul(lam).add_(images.flip(0), alpha=1.0 - lam)


class BatchMixer:
    """Draws each batch's mixing weight.

    Args:
        alpha: Beta(alpha, alpha) parameter (``robust.mixup_alpha``), above 0.
        seed: the run's seed.
    """

    def __init__(self, alpha: float, seed: int):
        if alpha <= 0:
            raise ValueError(f"robust.mixup_alpha must be above 0 to mix, got {alpha}")
        self.alpha = float(alpha)
        self.seed = int(seed)
        self.start_epoch(0)

    def start_epoch(self, epoch: int, process_index: int = 0) -> None:
        """Re-seed from (seed, epoch, process): the epoch's weights depend on nothing else."""
        self._rng = np.random.default_rng([self.seed, int(epoch), int(process_index)])

    def draw(self) -> float:
        """The next batch's weight, in [0.5, 1]."""
        lam = float(self._rng.beta(self.alpha, self.alpha))
        return max(lam, 1.0 - lam)
