"""Masked image modelling (MIM) head of the local branch (DR-FER), in SimMIM style.

A CNN needs the full pixel grid, so masking follows SimMIM rather than MAE: masked patches are
replaced in place (by 0, i.e. the dataset mean once images are normalised) and the whole image is
encoded. The named steps, as in MAE's ``models_mae.py``:

- :func:`random_masking`: ``(N, 3, H, W)`` -> masked images ``(N, 3, H, W)`` and patch mask
  ``(N, L)``, ``L = (H / p) (W / p)``, 1 = masked;
- encoding: the shared backbone (and the local branch's projection), run by the network on the
  whole partly-masked batch, once;
- :meth:`MIMHead.forward_decoder`: local map ``(n, D, h, w)`` -> pixels ``(n, 3, H, W)``;
- :meth:`MIMHead.forward_loss`: L1/MSE between prediction and target on masked patches only.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

__all__ = ["random_masking", "mask_to_pixels", "patchify", "MIMHead"]


def random_masking(imgs: torch.Tensor, mask_ratio: float, patch_size: int,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask ``round(L * mask_ratio)`` random patches of every image (MAE's per-sample shuffle).

    Args:
        imgs: ``(N, 3, H, W)`` normalised images; ``patch_size`` must divide ``H`` and ``W``.
        mask_ratio: share of patches masked, in ``[0, 1)``.
        patch_size: patch side ``p`` in input pixels.
        generator: optional RNG for reproducible masks.

    Returns:
        ``(masked_imgs, mask)``: ``(N, 3, H, W)`` with masked patches set to 0, and ``(N, L)``
        float mask, 1 where a patch is masked.
    """
    n, _, h, w = imgs.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the input size {h}x{w}")
    num_patches = (h // patch_size) * (w // patch_size)
    num_masked = int(round(num_patches * mask_ratio))
    noise_device = generator.device if generator is not None else imgs.device
    noise = torch.rand(n, num_patches, generator=generator, device=noise_device).to(imgs.device)
    # The num_masked patches with the smallest noise are masked.
    rank = noise.argsort(dim=1).argsort(dim=1)                   # (N, L)
    mask = (rank < num_masked).to(imgs.dtype)                    # (N, L)
    keep = 1.0 - mask_to_pixels(mask, patch_size, h, w)         # (N, 1, H, W)
    return imgs * keep, mask


def mask_to_pixels(mask: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """Patch mask ``(N, L)`` -> pixel mask ``(N, 1, H, W)``."""
    grid = mask.reshape(mask.shape[0], 1, height // patch_size, width // patch_size)
    return grid.repeat_interleave(patch_size, dim=2).repeat_interleave(patch_size, dim=3)


def patchify(imgs: torch.Tensor, patch_size: int) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, L, p*p*3)`` patches in row-major patch order."""
    return rearrange(imgs, "n c (h p1) (w p2) -> n (h w) (p1 p2 c)", p1=patch_size, p2=patch_size)


class MIMHead(nn.Module):
    """Light decoder and reconstruction loss (SimMIM: a 1x1 conv + PixelShuffle; here with one
    3x3 conv more so neighbouring cells can inform each patch).

    Decoder: ``(n, in_channels, h, w)`` -> 1x1 conv to ``decoder_dim`` -> GELU -> 3x3 conv -> GELU
    -> 1x1 conv to ``3 r^2`` -> PixelShuffle(r) -> ``(n, 3, h r, w r)``, ``r = ceil(img_size / h)``;
    resized bilinearly to ``img_size`` when ``h r != img_size`` (backbones whose stride does not
    divide the input).

    Args:
        in_channels: channels of the map the decoder reads (the local branch's projection).
        feature_size: ``(h, w)`` of that map.
        img_size: input side ``H = W``.
        patch_size: masking patch side ``p``.
        decoder_dim: width of the decoder.
        norm_pix_loss: compare with per-patch normalised targets (MAE).
        loss: ``'l1'`` (SimMIM) or ``'mse'`` (MAE).
    """

    def __init__(self, in_channels: int, feature_size: tuple[int, int], img_size: int,
                 patch_size: int, decoder_dim: int = 128, norm_pix_loss: bool = True,
                 loss: str = "l1") -> None:
        super().__init__()
        if loss not in ("l1", "mse"):
            raise ValueError(f"MIM loss must be 'l1' or 'mse', got {loss!r}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.norm_pix_loss = norm_pix_loss
        self.loss = loss
        self.upscale = math.ceil(img_size / min(feature_size))
        self.decoder = nn.Sequential(
            nn.Conv2d(in_channels, decoder_dim, 1),
            nn.GELU(),
            nn.Conv2d(decoder_dim, decoder_dim, 3, padding=1),
            nn.GELU(),
            nn.Conv2d(decoder_dim, 3 * self.upscale ** 2, 1),
            nn.PixelShuffle(self.upscale),
        )

    def forward_decoder(self, feat: torch.Tensor) -> torch.Tensor:
        """``(n, in_channels, h, w)`` -> predicted normalised pixels ``(n, 3, H, W)``."""
        pred = self.decoder(feat)
        if pred.shape[-2:] != (self.img_size, self.img_size):
            pred = F.interpolate(pred, size=(self.img_size, self.img_size), mode="bilinear",
                                 align_corners=False)
        return pred

    def forward_loss(self, imgs: torch.Tensor, pred: torch.Tensor,
                     mask: torch.Tensor) -> torch.Tensor:
        """Reconstruction loss on masked patches only.

        Args:
            imgs: ``(n, 3, H, W)`` unmasked target images.
            pred: ``(n, 3, H, W)`` decoder output.
            mask: ``(n, L)``, 1 = masked.

        Returns:
            Scalar: mean over masked patches of the per-patch mean L1/squared error; exactly 0
            (still attached to the graph) when no patch is masked.
        """
        target = patchify(imgs, self.patch_size)                   # (n, L, p*p*3)
        if self.norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1e-6).sqrt()
        pred = patchify(pred, self.patch_size)                     # (n, L, p*p*3)
        err = (pred - target).abs() if self.loss == "l1" else (pred - target) ** 2
        per_patch = err.mean(dim=-1)                               # (n, L)
        return (per_patch * mask).sum() / mask.sum().clamp_min(1.0)
