"""DataLoaders for training, evaluation and the per-sample pass."""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Sampler

from fer_robust.data.base import FERDataset

__all__ = ["EpochShuffleSampler", "build_train_loader", "build_eval_loader"]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation seeded by ``(seed, epoch)``: resuming at an epoch replays its order."""

    def __init__(self, num_samples: int, seed: int = 0):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=g).tolist())

    def __len__(self) -> int:
        return self.num_samples


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
