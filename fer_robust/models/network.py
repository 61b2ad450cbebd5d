"""The two-branch network of DR-FER with ARM pooling, and the baseline it is compared against.

Both follow timm's contract (``forward_features`` -> ``forward_head(pre_logits=...)``) and return
a dict from ``forward`` so the trainer can pick the loss terms it needs:

=================  ==========================================================================
key                value
=================  ==========================================================================
``logits``         ``(N, num_classes)`` the global classifier's logits: the prediction used for
                   evaluation and for the main CE (the local logits are a separate loss term)
``local_logits``   ``(N, num_classes)`` the local classifier's logits (two-branch, local head on)
``embedding``      ``(N, embed_dim)`` ``l2norm(concat(L, G))`` (baseline: ``l2norm(pooled)``), for
                   the contrastive loss and retrieval relabelling
``mim_loss``       scalar, only when ``forward(x, mim=True)`` in training mode with MIM enabled
``mim_index``      ``(n,)`` batch positions of the masked images (same condition)
``cam``            ``(N, num_classes, h, w)`` class activation maps (baseline and SCN, only when
                   ``forward(x, cam=True)``; EAC's consistency loss)
``importance``     ``(N,)`` SCN's self-attention importance weight in (0, 1) (SCN only)
``feature_map``    ``(N, C, h, w)`` the backbone map every branch reads (two-branch, only when
                   ``forward(x, features=True)``; the robust stages' flip consistency)
=================  ==========================================================================

Inference needs no masking and no batch-mates: in eval mode every output of an image is the same
alone or in any batch (ARM uses its running affinity, BatchNorm its running statistics).
"""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

from fer_robust.config import ModelConfig
from fer_robust.models.backbone import Backbone
from fer_robust.models.branches import GlobalBranch, LocalBranch
from fer_robust.models.mim import MIMHead, random_masking

__all__ = ["TwoBranchFER", "BaselineFER", "ARMFER", "SCNFER"]


class _BackboneNet(nn.Module):
    """What both networks share: a timm backbone as ``self.backbone`` and the timm contract's
    first step."""

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.img_size = img_size
        self.backbone = Backbone(cfg.backbone, img_size, pretrained=cfg.pretrained,
                                 pretrained_file=cfg.pretrained_file,
                                 allow_pickle=cfg.allow_pickle, output_stride=cfg.output_stride)

    @property
    def data_config(self) -> dict:
        """timm's preprocessing for the backbone (``mean``, ``std``, ``interpolation``, ...)."""
        return timm.data.resolve_model_data_config(self.backbone.model)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` -> backbone map ``(N, C, h, w)``."""
        return self.backbone(x)


class TwoBranchFER(_BackboneNet):
    """Shared backbone -> global branch (ARM -> G -> logits) and local branch (regions -> L ->
    local logits; its region map feeds the MIM decoder).

    Training with ``mim=True`` masks ``cfg.mim.masked_fraction`` of the batch's images (each with
    ``cfg.mim.mask_ratio`` of its patches), runs ONE backbone pass over the partly masked batch,
    classifies every image (masking then acts like random erasing) and reconstructs only the masked
    ones, so MIM adds a light decoder on a part of the batch and no second backbone pass.

    Args:
        cfg: the model section of the config.
        num_classes: number of expression classes.
        img_size: input side in pixels (fixes the ARM geometry and the decoder's upscale).
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int) -> None:
        super().__init__(cfg, num_classes, img_size)
        channels, feature_size = self.backbone.num_features, self.backbone.feature_size
        self.global_branch = GlobalBranch(
            channels, feature_size, num_classes, pooling=cfg.pooling, drop_rate=cfg.drop_rate,
            arm_momentum=cfg.arm.momentum, affinity_weight=cfg.arm.affinity_weight,
            learn_affinity_weight=cfg.arm.learn_affinity_weight)
        # Without the local branch (model.local_branch=false, an ablation) there is no L, no local
        # logits and no MIM (its decoder reads the region map): V = l2norm(G).
        self.local_branch: LocalBranch | None = None
        if cfg.local_branch:
            self.local_branch = LocalBranch(
                channels, cfg.local_dim, grid=cfg.local_grid,
                num_classes=num_classes if cfg.local_head else None, drop_rate=cfg.drop_rate)
        self.mim_head: MIMHead | None = None
        if cfg.mim.enabled and cfg.local_branch:
            self.mim_head = MIMHead(cfg.local_dim, feature_size, img_size, cfg.mim.patch_size,
                                    decoder_dim=cfg.mim.decoder_dim,
                                    norm_pix_loss=cfg.mim.norm_pix_loss, loss=cfg.mim.loss)
        self.global_dim = self.global_branch.out_dim
        self.local_dim = self.local_branch.out_dim if self.local_branch is not None else 0
        self.embed_dim = self.local_dim + self.global_dim

    def forward_head(self, feat: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global branch: map -> logits ``(N, num_classes)``, or G ``(N, global_dim)`` if
        ``pre_logits``."""
        if pre_logits:
            return self.global_branch.pool_features(feat)
        return self.global_branch(feat)[1]

    def _choose_masked(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pick the images to mask and mask them.

        Returns:
            ``(x_in (N, 3, H, W) partly masked batch, masked_index (n,), mask (n, L))``.
        """
        n = x.shape[0]
        fraction = self.cfg.mim.masked_fraction
        num_masked = min(n, max(1, round(n * fraction))) if fraction > 0 else 0
        masked_index = torch.randperm(n, device=x.device)[:num_masked]
        masked, mask = random_masking(x[masked_index], self.cfg.mim.mask_ratio,
                                      self.cfg.mim.patch_size)
        return x.index_copy(0, masked_index, masked), masked_index, mask

    def forward(self, x: torch.Tensor, mim: bool = False,
                features: bool = False) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` normalised images -> output dict (see the module docstring).

        Args:
            x: the batch.
            mim: mask part of the batch and return ``mim_loss`` (training mode only; ignored in
                eval mode and when MIM is disabled).
            features: also return ``feature_map``, the backbone map of the (partly masked) batch.
        """
        use_mim = mim and self.training and self.mim_head is not None
        x_in = x
        if use_mim:
            x_in, masked_index, mask = self._choose_masked(x)
        feat = self.forward_features(x_in)                          # (N, C, h, w)
        global_feat, logits = self.global_branch(feat)              # (N, Dg), (N, K)
        if self.local_branch is None:
            out = {"logits": logits, "embedding": F.normalize(global_feat, dim=1)}
            if features:
                out["feature_map"] = feat
            return out
        regions = self.local_branch.region_map(feat)                # (N, Dl, h, w)
        local_feat = self.local_branch.pool_regions(regions)        # (N, Dl)
        out = {
            "logits": logits,
            "embedding": F.normalize(torch.cat([local_feat, global_feat], dim=1), dim=1),
        }
        if features:
            out["feature_map"] = feat
        local_logits = self.local_branch.classify(local_feat)
        if local_logits is not None:
            out["local_logits"] = local_logits
        if use_mim:
            pred = self.mim_head.forward_decoder(regions[masked_index])  # (n, 3, H, W)
            out["mim_loss"] = self.mim_head.forward_loss(x[masked_index], pred, mask)
            out["mim_index"] = masked_index
        return out


class BaselineFER(_BackboneNet):
    """The control: backbone -> global average pooling -> dropout -> linear.

    ``forward(x, mim=...)`` accepts the flag so the trainer can call both models alike; the
    baseline has no MIM head and never returns ``mim_loss``.

    Args:
        cfg: the model section of the config (backbone, pretrained weights, drop rate are used).
        num_classes: number of expression classes.
        img_size: input side in pixels.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int) -> None:
        super().__init__(cfg, num_classes, img_size)
        self.embed_dim = self.backbone.num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.embed_dim, num_classes)

    def forward_head(self, feat: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map -> logits ``(N, num_classes)``, or the pooled feature ``(N, C)`` if ``pre_logits``."""
        pooled = self.pool(feat).flatten(1)
        return pooled if pre_logits else self.head(self.drop(pooled))

    def class_activation_maps(self, feat: torch.Tensor, head_grad: bool = False) -> torch.Tensor:
        """Class activation maps (Zhou et al. 2016): the classifier applied at every cell of the
        map, without its bias. ``(N, C, h, w)`` -> ``(N, num_classes, h, w)``; averaging a map over
        its cells gives that class's logit minus the bias.

        ``head_grad=False`` detaches the classifier weights, so a loss on the maps trains the
        features only (as EAC's code does).
        """
        weight = self.head.weight if head_grad else self.head.weight.detach()   # (K, C)
        return torch.einsum("nchw,kc->nkhw", feat, weight.to(feat.dtype))

    def forward(self, x: torch.Tensor, mim: bool = False, cam: bool = False,
                cam_head_grad: bool = False) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` -> ``{'logits': (N, K), 'embedding': (N, C)}``, plus ``'cam'``
        ``(N, K, h, w)`` when ``cam`` (see :meth:`class_activation_maps`); ``mim`` is ignored."""
        feat = self.forward_features(x)                              # (N, C, h, w)
        pooled = self.forward_head(feat, pre_logits=True)            # (N, C)
        out = {"logits": self.head(self.drop(pooled)), "embedding": F.normalize(pooled, dim=1)}
        if cam:
            out["cam"] = self.class_activation_maps(feat, cam_head_grad)
        return out


class ARMFER(_BackboneNet):
    """ARM's own network (Shi & Zhu): backbone -> Amend Representation Module -> dropout -> linear.

    The single-branch model of ARM's released code, for reproducing its figures
    (``configs/arm_rafdb.yaml``). ``forward(x, mim=...)`` accepts the flag like the others and
    ignores it. The embedding is the l2-normalised ARM vector.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int) -> None:
        super().__init__(cfg, num_classes, img_size)
        self.global_branch = GlobalBranch(
            self.backbone.num_features, self.backbone.feature_size, num_classes, pooling="arm",
            drop_rate=cfg.drop_rate, arm_momentum=cfg.arm.momentum,
            affinity_weight=cfg.arm.affinity_weight,
            learn_affinity_weight=cfg.arm.learn_affinity_weight)
        self.embed_dim = self.global_branch.out_dim

    def forward_head(self, feat: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map -> logits ``(N, num_classes)``, or the ARM vector ``(N, D)`` if ``pre_logits``."""
        if pre_logits:
            return self.global_branch.pool_features(feat)
        return self.global_branch(feat)[1]

    def forward(self, x: torch.Tensor, mim: bool = False) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` -> ``{'logits': (N, K), 'embedding': (N, D)}``; ``mim`` is ignored."""
        pooled, logits = self.global_branch(self.forward_features(x))
        return {"logits": logits, "embedding": F.normalize(pooled, dim=1)}


class SCNFER(BaselineFER):
    """SCN's network (Wang et al., CVPR 2020): the baseline plus a self-attention importance
    branch. Backbone -> global average pooling -> dropout -> ``alpha = sigmoid(FC(.))`` (one
    weight in (0, 1) per image) and logits ``alpha * linear(.)``, as the authors' ``Res18Feature``.

    The logits are the importance-weighted ones in training and in evaluation alike (the authors'
    code evaluates on them too): a positive scale leaves the argmax, and so every accuracy, as it
    is, but flattens the softmax of low-importance images (``tools/predict.py`` reports those
    probabilities). The embedding is the l2-normalised pooled feature, as the baseline's.
    """

    def __init__(self, cfg: ModelConfig, num_classes: int, img_size: int) -> None:
        super().__init__(cfg, num_classes, img_size)
        self.importance = nn.Sequential(nn.Linear(self.embed_dim, 1), nn.Sigmoid())

    def forward_head(self, feat: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map -> importance-weighted logits ``(N, num_classes)``, or the pooled feature ``(N, C)``
        if ``pre_logits``."""
        pooled = self.pool(feat).flatten(1)
        if pre_logits:
            return pooled
        dropped = self.drop(pooled)
        return self.importance(dropped) * self.head(dropped)

    def forward(self, x: torch.Tensor, mim: bool = False, cam: bool = False,
                cam_head_grad: bool = False) -> dict[str, torch.Tensor]:
        """``(N, 3, H, W)`` -> ``{'logits': (N, K) weighted, 'importance': (N,), 'embedding':
        (N, C)}`` (plus the unweighted ``'cam'`` when asked); ``mim`` is ignored."""
        feat = self.forward_features(x)
        pooled = self.pool(feat).flatten(1)                          # (N, C)
        dropped = self.drop(pooled)
        alpha = self.importance(dropped)                             # (N, 1)
        out = {"logits": alpha * self.head(dropped), "importance": alpha.squeeze(1),
               "embedding": F.normalize(pooled, dim=1)}
        if cam:
            out["cam"] = self.class_activation_maps(feat, cam_head_grad)
        return out
