"""The two branches that read the shared backbone map.

- :class:`GlobalBranch`: the whole face. Map -> ARM (or global average pooling) -> G -> classifier.
- :class:`LocalBranch`: facial regions. Map -> 1x1 projection (the region map, which the MIM
  decoder also reads) -> max pool over a ``grid x grid`` grid of regions -> flatten -> linear -> L,
  with an optional classifier. Max pooling per region keeps the strongest local cue of each part of
  the face (eyes/brows in the top cells, mouth in the bottom ones for aligned faces) and the linear
  layer keeps which region it came from, which a single global pool would lose.
"""
from __future__ import annotations

import torch
from torch import nn

from fer_robust.models.arm import AmendRepresentationModule

__all__ = ["GlobalBranch", "LocalBranch"]


class GlobalBranch(nn.Module):
    """Map ``(N, C, h, w)`` -> global representation G ``(N, out_dim)`` and logits.

    Args:
        in_channels: ``C``.
        feature_size: ``(h, w)``.
        num_classes: classifier outputs.
        pooling: ``'arm'`` (:class:`AmendRepresentationModule`, ``out_dim`` from its geometry) or
            ``'avg'`` (global average pooling, ``out_dim = C``).
        drop_rate: dropout before the classifier.
        arm_momentum, affinity_weight, learn_affinity_weight: ARM settings (``ARMConfig``).
    """

    def __init__(self, in_channels: int, feature_size: tuple[int, int], num_classes: int,
                 pooling: str = "arm", drop_rate: float = 0.0, arm_momentum: float = 0.1,
                 affinity_weight: float = 1.0, learn_affinity_weight: bool = True) -> None:
        super().__init__()
        if pooling == "arm":
            self.pool: nn.Module = AmendRepresentationModule(
                in_channels, feature_size, momentum=arm_momentum, affinity_weight=affinity_weight,
                learn_affinity_weight=learn_affinity_weight)
            self.out_dim = self.pool.out_dim
        elif pooling == "avg":
            self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
            self.out_dim = in_channels
        else:
            raise ValueError(f"pooling must be 'arm' or 'avg', got {pooling!r}")
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.out_dim, num_classes)

    def pool_features(self, feat: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` -> G ``(N, out_dim)``."""
        return self.pool(feat)

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, h, w)`` -> ``(G (N, out_dim), logits (N, num_classes))``."""
        g = self.pool_features(feat)
        return g, self.head(self.drop(g))


class LocalBranch(nn.Module):
    """Map ``(N, C, h, w)`` -> local representation L ``(N, local_dim)`` and optional logits.

    Args:
        in_channels: ``C``.
        local_dim: channels of the region map and dimension of L.
        grid: regions per side (``grid x grid`` regions); maps smaller than the grid repeat cells.
        num_classes: classifier outputs, or None for no local classifier.
        drop_rate: dropout before the classifier.
    """

    def __init__(self, in_channels: int, local_dim: int = 256, grid: int = 2,
                 num_classes: int | None = None, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.out_dim = local_dim
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, local_dim, 1, bias=False),
            nn.BatchNorm2d(local_dim),
            nn.ReLU(inplace=True),
        )
        self.region_pool = nn.AdaptiveMaxPool2d(grid)
        self.fuse = nn.Linear(local_dim * grid * grid, local_dim)
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(local_dim, num_classes) if num_classes else None

    def region_map(self, feat: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` -> region map ``(N, local_dim, h, w)`` (also the MIM decoder's input)."""
        return self.project(feat)

    def pool_regions(self, regions: torch.Tensor) -> torch.Tensor:
        """Region map ``(N, local_dim, h, w)`` -> L ``(N, local_dim)``."""
        return self.fuse(self.region_pool(regions).flatten(1))   # (N, local_dim * grid^2) -> L

    def classify(self, local: torch.Tensor) -> torch.Tensor | None:
        """L ``(N, local_dim)`` -> logits ``(N, num_classes)``, or None without a local head."""
        return self.head(self.drop(local)) if self.head is not None else None

    def forward(self, feat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(N, C, h, w)`` -> ``(L (N, local_dim), logits (N, num_classes) or None)``."""
        local = self.pool_regions(self.region_map(feat))
        return local, self.classify(local)
