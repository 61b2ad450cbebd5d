"""Image transforms: PIL image (any mode) -> normalised ``3 x S x S`` float tensor.

Training applies ``data.augment``; evaluation only resizes to ``(S, S)`` and normalises, so a
sample's evaluation input is deterministic (the per-sample pass, the GMM split and the relabelling
all rely on that).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from torchvision import transforms as T

if TYPE_CHECKING:
    from fer_robust.config import DataConfig

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "ToRGB", "build_transform", "denormalize"]

# Backbones are ImageNet- (or MS-Celeb-) pretrained with these statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ToRGB:
    """Convert any PIL mode (FER2013 and FERPlus are grayscale) to 3-channel RGB. A class rather
    than a lambda so the transform pickles into spawned loader workers."""

    def __call__(self, img: Image.Image) -> Image.Image:
        return img if img.mode == "RGB" else img.convert("RGB")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def build_transform(data_cfg: "DataConfig", train: bool) -> T.Compose:
    """The train or eval transform for ``data_cfg.img_size`` pixels.

    Train order: RandomResizedCrop (``augment.crop_scale``; aspect ratio kept within 10% because
    faces are aligned) or a plain resize when the scale is ``(1, 1)``, horizontal flip, rotation,
    colour jitter (brightness, contrast and saturation all ``augment.color_jitter``), to tensor,
    normalise, random erasing of one box covering ``augment.erasing_scale`` of the image (which
    must follow normalisation, as in torchvision). Each step whose strength is 0 is left out.
    """
    size = data_cfg.img_size
    aug = data_cfg.augment
    steps: list = [ToRGB()]
    if train:
        if tuple(aug.crop_scale) == (1.0, 1.0):
            steps.append(T.Resize((size, size)))
        else:
            steps.append(T.RandomResizedCrop(size, scale=tuple(aug.crop_scale), ratio=(0.9, 1.1)))
        if aug.hflip > 0:
            steps.append(T.RandomHorizontalFlip(aug.hflip))
        if aug.rotation > 0:
            steps.append(T.RandomRotation(aug.rotation))
        if aug.color_jitter > 0:
            steps.append(T.ColorJitter(aug.color_jitter, aug.color_jitter, aug.color_jitter))
    else:
        steps.append(T.Resize((size, size)))
    steps += [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    if train and aug.random_erasing > 0:
        steps.append(T.RandomErasing(p=aug.random_erasing, scale=tuple(aug.erasing_scale)))
    return T.Compose(steps)


def denormalize(tensor: torch.Tensor) -> np.ndarray:
    """Undo the normalisation for display: ``(3, H, W)`` -> ``(H, W, 3)`` uint8, or
    ``(B, 3, H, W)`` -> ``(B, H, W, 3)``."""
    if tensor.ndim not in (3, 4) or tensor.shape[-3] != 3:
        raise ValueError(f"expected (3, H, W) or (B, 3, H, W), got {tuple(tensor.shape)}")
    t = tensor.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    pixels = ((t * std + mean).clamp(0, 1) * 255).round().to(torch.uint8)
    return pixels.movedim(-3, -1).numpy()
