"""Amend Representation Module (ARM; Shi & Zhu, arXiv 2103.10189), the pooling stage of the
global branch.

Global average pooling weighs every cell of the last feature map alike, yet the border cells are
"albino": their receptive fields reach into the convolutions' zero padding, which erodes them. ARM
replaces pooling with four steps (ResNet-18 at 224 px in brackets, as in ARM's released code):

1. **rearrange**: pixel-shuffle the map to few channels and a large plane
   (512x7x7 -> PixelShuffle(16) -> 2x112x112), so every feature value becomes a pixel;
2. **de-albino**: convolve every channel with ONE learned single-channel kernel shared by all
   channels, no padding (kernel 32, stride 8 -> 2x11x11); being learned and spatial, it can give the
   padding-eroded border positions a small weight;
3. **BatchNorm** over the rearranged channels, then the mean over channels (-> 11x11);
4. **affinity**: add ``alpha`` times the mean of the normalised maps over the minibatch (and
   channels), a map shared by all images, with ``alpha`` learned (initialised to 1). The output is
   flattened: a 121-d vector per image.

Generalisation to any map ``(C, H, W)`` (:func:`arm_geometry`):

- shuffle factor ``r``: the largest ``r`` with ``C % r**2 == 0`` and ``C / r**2 >= 2``
  (512 -> 16, 2 channels; 96 -> 4, 6 channels; 64 -> 4, 4 channels; 768 -> 16, 3 channels);
  ``r = 1`` if none exists;
- rearranged plane ``S = (H r, W r)``;
- stride ``s = max(1, S // 14)`` and kernel ``k = max(1, min(4 s, S // 2))`` per axis: the released
  code's ratios (S/s = 14, k = 4 s), which give an output side of ``S // s - 3``, between 11 and
  24, for any plane of 14 px or more (ResNet-18: 224 px -> 11x11, 112 px -> 13x13 (S=64, s=4,
  k=16), 64 px -> 13x13 (S=32, s=2, k=8)); the kernel never exceeds half the plane, so smaller
  planes keep at least two positions per axis;
- output dimension ``out_h * out_w`` with ``out = (S - k) // s + 1``.

Evaluation must not depend on the other images of the test batch (ARM issues #9, #17: accuracy
changed with the test batch size). So, as BatchNorm does, training uses the batch mean and updates
a running estimate (``running_affinity``, momentum ``momentum``), and evaluation uses that estimate.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ARMGeometry", "arm_geometry", "AmendRepresentationModule"]


@dataclass(frozen=True)
class ARMGeometry:
    """Shapes of the ARM steps for an input map ``(C, H, W)``; see the module docstring."""
    shuffle: int
    channels: int
    plane: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    out_size: tuple[int, int]

    @property
    def out_dim(self) -> int:
        """Dimension of the output vector G."""
        return self.out_size[0] * self.out_size[1]


def arm_geometry(channels: int, height: int, width: int) -> ARMGeometry:
    """Shuffle factor, kernel, stride and output size of ARM for a ``(C, H, W)`` feature map."""
    shuffle = 1
    for r in range(int(channels ** 0.5), 1, -1):
        if channels % (r * r) == 0 and channels // (r * r) >= 2:
            shuffle = r
            break
    plane = (height * shuffle, width * shuffle)
    stride = tuple(max(1, side // 14) for side in plane)
    kernel = tuple(max(1, min(4 * s, side // 2)) for s, side in zip(stride, plane))
    out_size = tuple((side - k) // s + 1 for side, k, s in zip(plane, kernel, stride))
    return ARMGeometry(shuffle=shuffle, channels=channels // (shuffle * shuffle), plane=plane,
                       kernel=kernel, stride=stride, out_size=out_size)  # type: ignore[arg-type]


class AmendRepresentationModule(nn.Module):
    """ARM pooling: ``(N, C, H, W)`` map -> ``(N, out_dim)`` vector G.

    Args:
        in_channels: ``C`` of the backbone map.
        feature_size: ``(H, W)`` of the backbone map.
        momentum: update rate of ``running_affinity`` (BatchNorm convention:
            ``running = (1 - momentum) * running + momentum * batch_value``).
        affinity_weight: initial ``alpha``.
        learn_affinity_weight: learn ``alpha`` (ARM's code does) or keep it fixed.
    """

    def __init__(self, in_channels: int, feature_size: tuple[int, int], momentum: float = 0.1,
                 affinity_weight: float = 1.0, learn_affinity_weight: bool = True) -> None:
        super().__init__()
        self.geometry = arm_geometry(in_channels, *feature_size)
        g = self.geometry
        self.rearrange = nn.PixelShuffle(g.shuffle)
        # One kernel shared by every channel: the channels are applied as a batch of 1-channel maps.
        self.de_albino = nn.Conv2d(1, 1, kernel_size=g.kernel, stride=g.stride, padding=0,
                                   bias=False)
        self.norm = nn.BatchNorm2d(g.channels)
        self.alpha = nn.Parameter(torch.tensor(float(affinity_weight)),
                                  requires_grad=learn_affinity_weight)
        self.momentum = momentum
        self.register_buffer("running_affinity", torch.zeros(g.out_size))
        self.out_dim = g.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, out_h * out_w)``."""
        n = x.shape[0]
        g = self.geometry
        x = self.rearrange(x)                                     # (N, c, S_h, S_w)
        x = self.de_albino(x.reshape(n * g.channels, 1, *x.shape[-2:]))  # (N c, 1, o_h, o_w)
        x = self.norm(x.reshape(n, g.channels, *g.out_size))      # (N, c, o_h, o_w)
        amended = x.mean(dim=1)                                    # (N, o_h, o_w)
        if self.training:
            affinity = x.mean(dim=(0, 1))                          # (o_h, o_w), shared by the batch
            with torch.no_grad():
                # Under autocast the batch value is bf16/fp16; the estimate stays fp32.
                self.running_affinity.lerp_(affinity.detach().to(self.running_affinity.dtype),
                                            self.momentum)
        else:
            affinity = self.running_affinity.to(x.dtype)
        return (amended + self.alpha * affinity).flatten(1)       # (N, o_h o_w)

    def extra_repr(self) -> str:
        g = self.geometry
        return (f"shuffle={g.shuffle}, channels={g.channels}, plane={g.plane}, kernel={g.kernel}, "
                f"stride={g.stride}, out_dim={g.out_dim}, momentum={self.momentum}")
