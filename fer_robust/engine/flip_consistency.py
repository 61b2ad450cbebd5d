"""Flip consistency of the robust stages (``robust.flip_consistency``; see
:class:`~fer_robust.config.FlipConsistencyConfig` for what was chosen and why).

EAC (Zhang et al., ECCV 2022) keeps a network from memorising a wrong label by asking its attention
to be the same on a face and on its mirror image. Here the same idea runs inside the robust stages
of the two-branch system, in three named steps of one training step::

    batch = views(images)                  (2B, 3, H, W)  erased images, then their mirrors
    out   = model(batch, mim, features=True)               one forward pass over both views
    out, term = split(out, B)              the images' outputs for every other term, and
                                           mean over pairs and cells of 1 - cos(F[i], flip(F[B + i]))

``F`` is the backbone map ``(C, h, w)`` and the cosine is taken per cell over its channels. The
mirror's outputs enter the consistency term alone, as in EAC (cross-entropy on the unflipped image
only). MIM may mask images of either view; a pair with a masked image counts for no consistency.
BatchNorm normalises both views with the same statistics (EAC's ``joint_forward``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fer_robust.config import FlipConsistencyConfig
from fer_robust.methods.eac import random_erase

__all__ = ["FlipConsistency", "map_flip_consistency"]


def map_flip_consistency(feature_map: torch.Tensor, map_of_mirror: torch.Tensor,
                         valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the ``valid`` images and the cells of ``1 - cos`` between an image's cell and the
    same cell of its mirror's map mirrored back.

    Args:
        feature_map: ``(B, C, h, w)`` the images' maps.
        map_of_mirror: ``(B, C, h, w)`` the mirror images' maps (not yet mirrored back).
        valid: ``(B,)`` bool, the pairs that count (default all).

    Zero when the maps are flip-equivariant up to a positive scale per cell; in ``[0, 2]``;
    computed in float32. With no valid pair it is a zero that still belongs to the graph.
    """
    a = F.normalize(feature_map.float(), dim=1)
    b = F.normalize(torch.flip(map_of_mirror.float(), dims=[-1]), dim=1)
    per_image = (1.0 - (a * b).sum(dim=1)).flatten(1).mean(dim=1)        # (B,)
    if valid is None:
        return per_image.mean()
    valid = valid.to(per_image.device)
    if not bool(valid.any()):
        return per_image.sum() * 0.0
    return per_image[valid].mean()


class FlipConsistency:
    """The two steps around the forward pass (see the module docstring).

    Args:
        cfg: ``robust.flip_consistency``.
    """

    def __init__(self, cfg: FlipConsistencyConfig) -> None:
        self.cfg = cfg

    def views(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` -> ``(2B, 3, H, W)``: the erased images (EAC's random erasing), then
        their mirror images, so both views of a pair lose the same box."""
        cfg = self.cfg
        erased = random_erase(images, cfg.erasing_prob, tuple(cfg.erasing_scale),
                              tuple(cfg.erasing_ratio))
        return torch.cat([erased, torch.flip(erased, dims=[3])])

    @staticmethod
    def split(out: dict, batch_size: int) -> tuple[dict, torch.Tensor]:
        """The forward pass over :meth:`views` -> ``(the images' outputs, the consistency term)``.

        Per-image outputs keep their first ``batch_size`` rows; ``mim_index`` keeps the masked
        images of the first view (so the classification terms leave them out as usual);
        ``mim_loss`` stays the loss over every masked image of both views; ``feature_map`` is
        consumed by the term.
        """
        b = batch_size
        feature_map = out["feature_map"]
        if feature_map.shape[0] != 2 * b:
            raise ValueError(f"expected the maps of {2 * b} views, got {feature_map.shape[0]}")
        valid = torch.ones(2 * b, dtype=torch.bool, device=feature_map.device)
        images_out: dict = {}
        for key, value in out.items():
            if key == "feature_map":
                continue
            if key == "mim_index":
                valid[value] = False
                images_out[key] = value[value < b]
            elif torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == 2 * b:
                images_out[key] = value[:b]
            else:
                images_out[key] = value
        term = map_flip_consistency(feature_map[:b], feature_map[b:], valid[:b] & valid[b:])
        return images_out, term
