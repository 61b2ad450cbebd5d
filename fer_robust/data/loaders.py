"""DataLoaders for training, evaluation and the per-sample pass."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler

from fer_robust.data.base import FERDataset

__all__ = ["build_train_loader", "build_eval_loader"]


def build_train_loader(dataset: FERDataset, batch_size: int, num_workers: int, sampler: Sampler) -> DataLoader:
    """Training loader; ``drop_last`` keeps BatchNorm and ARM's batch statistics well defined.

    Augmentation randomness in workers is seeded from torch's global RNG, which accelerate saves
    and restores with every checkpoint, so a resumed run replays the same augmentations.
    """
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                      drop_last=len(dataset) > batch_size, pin_memory=torch.cuda.is_available(),
                      persistent_workers=False)


def build_eval_loader(dataset: FERDataset, batch_size: int, num_workers: int) -> DataLoader:
    """Ordered loader over every sample once (evaluation and the per-sample pass)."""
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=False,
                      num_workers=num_workers, pin_memory=torch.cuda.is_available())
