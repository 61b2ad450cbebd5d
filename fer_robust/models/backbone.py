"""The shared feature extractor: any timm model, exposed as an NCHW feature map.

Both branches (and the MIM decoder) read the same map, so the backbone runs once per image.
"""
from __future__ import annotations

import logging
import math

import timm
import torch
from torch import nn

from fer_robust.models.weights import LoadReport, load_pretrained_file, resolve_pretrained_file

__all__ = ["Backbone", "create_backbone"]

_logger = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A timm model built with ``num_classes=0, global_pool=''`` whose ``forward`` returns a map.

    CNNs (ResNet, ConvNeXt, EfficientNet, ...) return their last stage's map. Token models (ViT,
    DeiT, ...) are built for ``img_size`` (so 48-112 px inputs work) and their patch tokens, prefix
    (class/register) tokens dropped, are laid back on the patch grid. Channels-last maps (Swin)
    are permuted to NCHW.

    Args:
        name: timm model name, e.g. ``'resnet18'``, ``'convnext_atto'``, ``'vit_small_patch16_224'``.
        img_size: training/eval input side in pixels.
        output_stride: input pixels per cell of the final map (32 as built; 16 or 8 dilate the last
            stages, for small inputs whose map would otherwise be 2x2 or smaller).
        pretrained: load timm's own pretrained weights (needs the network or a local HF cache).
        pretrained_file: local weight file loaded with :func:`load_pretrained_file` (offline);
            takes precedence over ``pretrained``. ``''`` or ``'none'`` (any case): no file.
        allow_pickle: let :func:`load_pretrained_file` unpickle the file (``.pkl`` such as
            VGGFace2's, or a torch file ``weights_only=True`` refuses); only for trusted files.

    Attributes:
        num_features: channels ``C`` of the map.
        feature_size: ``(h, w)`` of the map for ``img_size`` inputs.
        img_size: the input side the geometry was computed for.
        load_report: the :class:`LoadReport` when ``pretrained_file`` was given, else None.
        pretrained_source: where the initial weights came from, one line for the run's records:
            ``'none (trained from scratch)'``, ``'timm:<model>.<tag>'`` or
            ``'file:<path> (<loaded>/<total> tensors, format <fmt>)'``.
    """

    def __init__(self, name: str, img_size: int, pretrained: bool = False,
                 pretrained_file: str = "", allow_pickle: bool = False,
                 output_stride: int = 32) -> None:
        super().__init__()
        pretrained_file = resolve_pretrained_file(pretrained_file)
        use_timm_weights = pretrained and not pretrained_file
        kwargs = dict(pretrained=use_timm_weights, num_classes=0, global_pool="")
        if output_stride != 32:
            # timm dilates the last stage(s) instead of striding (ResNets, ConvNeXt, ...): same
            # weights, a larger final map (48 px at stride 16: 3x3 instead of 2x2).
            kwargs["output_stride"] = output_stride
        try:
            # Token models need the input size at build time (position embeddings, patch grid).
            self.model = timm.create_model(name, img_size=img_size, **kwargs)
        except TypeError:
            self.model = timm.create_model(name, **kwargs)
        self.name = name
        self.img_size = img_size
        self.num_features: int = int(self.model.num_features)
        self.num_prefix_tokens: int = int(getattr(self.model, "num_prefix_tokens", 0))
        self.load_report: LoadReport | None = None
        self.pretrained_source = "none (trained from scratch)"
        if pretrained_file:
            self.load_report = load_pretrained_file(self.model, pretrained_file,
                                                    allow_pickle=allow_pickle)
            self.pretrained_source = self.load_report.describe()
        elif use_timm_weights:
            cfg = getattr(self.model, "pretrained_cfg", None) or {}
            tag = f".{cfg['tag']}" if cfg.get("tag") else ""
            self.pretrained_source = f"timm:{cfg.get('architecture', name)}{tag}"
        self.feature_size: tuple[int, int] = self.feature_size_for(img_size)
        self._freeze_unused_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` images -> ``(N, C, h, w)`` feature map."""
        return self._to_map(self.model.forward_features(x), x.shape[-2:])

    def _to_map(self, out: torch.Tensor, input_hw: torch.Size) -> torch.Tensor:
        if out.ndim == 3:
            # Tokens (N, T, C): drop class/register tokens, lay the patch tokens on their grid.
            tokens = out[:, self.num_prefix_tokens:]
            grid = self._token_grid(tokens.shape[1], input_hw)
            return tokens.transpose(1, 2).reshape(out.shape[0], out.shape[2], *grid)
        if out.ndim == 4 and out.shape[1] != self.num_features and out.shape[-1] == self.num_features:
            return out.permute(0, 3, 1, 2).contiguous()  # NHWC (Swin-style) -> NCHW
        if out.ndim != 4:
            raise ValueError(f"backbone {self.name!r}: forward_features returned shape "
                             f"{tuple(out.shape)}, cannot form a feature map")
        return out

    def _token_grid(self, num_tokens: int, input_hw: torch.Size) -> tuple[int, int]:
        patch_embed = getattr(self.model, "patch_embed", None)
        if patch_embed is not None and hasattr(patch_embed, "patch_size"):
            ph, pw = patch_embed.patch_size
            grid = (int(input_hw[0]) // ph, int(input_hw[1]) // pw)
            if grid[0] * grid[1] == num_tokens:
                return grid
        side = int(math.isqrt(num_tokens))
        if side * side != num_tokens:
            raise ValueError(f"backbone {self.name!r}: {num_tokens} patch tokens do not form a "
                             "square grid")
        return side, side

    @torch.no_grad()
    def feature_size_for(self, img_size: int) -> tuple[int, int]:
        """``(h, w)`` of the map for an ``img_size`` x ``img_size`` input (one dry run in eval
        mode, so BatchNorm statistics are untouched)."""
        was_training = self.training
        self.eval()
        try:
            feat = self(torch.zeros(1, 3, img_size, img_size))
        finally:
            self.train(was_training)
        return int(feat.shape[-2]), int(feat.shape[-1])

    def _freeze_unused_parameters(self) -> None:
        """Freeze parameters that ``forward_features`` never reaches (e.g. ConvNeXt's head norm,
        applied after pooling in timm): DistributedDataParallel fails on parameters without grads."""
        was_training = self.training
        self.eval()
        try:
            self(torch.zeros(1, 3, self.img_size, self.img_size)).sum().backward()
        finally:
            self.train(was_training)
        for pname, p in self.model.named_parameters():
            if p.requires_grad and p.grad is None:
                p.requires_grad_(False)
                _logger.debug("backbone %s: parameter %s is unused by the feature map; frozen",
                              self.name, pname)
            p.grad = None


def create_backbone(name: str, img_size: int, pretrained: bool = False,
                    pretrained_file: str = "", allow_pickle: bool = False) -> Backbone:
    """Build a :class:`Backbone` (see its arguments)."""
    return Backbone(name, img_size, pretrained=pretrained, pretrained_file=pretrained_file,
                    allow_pickle=allow_pickle)
