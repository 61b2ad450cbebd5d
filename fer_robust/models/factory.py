"""Building a model from the config: ``build_model(cfg.model, num_classes, img_size)``.

Architectures are registered by name with :func:`register_model` (timm's pattern), so the
baseline is one config switch away: ``model.arch=baseline``.
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from fer_robust.config import ModelConfig
from fer_robust.models.network import ARMFER, SCNFER, BaselineFER, TwoBranchFER
from fer_robust.utils import register_in

__all__ = ["register_model", "build_model", "list_models"]

ModelBuilder = Callable[[ModelConfig, int, int], nn.Module]
_MODEL_REGISTRY: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering ``builder(cfg, num_classes, img_size) -> nn.Module`` under ``name``."""
    return register_in(_MODEL_REGISTRY, "model architecture", name)


def list_models() -> list[str]:
    """Names accepted by ``ModelConfig.arch``."""
    return sorted(_MODEL_REGISTRY)


@register_model("two_branch")
def _two_branch(cfg: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    return TwoBranchFER(cfg, num_classes, img_size)


@register_model("baseline")
def _baseline(cfg: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    return BaselineFER(cfg, num_classes, img_size)


@register_model("arm")
def _arm(cfg: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    return ARMFER(cfg, num_classes, img_size)


@register_model("scn")
def _scn(cfg: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    return SCNFER(cfg, num_classes, img_size)


def build_model(cfg: ModelConfig, num_classes: int, img_size: int) -> nn.Module:
    """Build the network named by ``cfg.arch`` for ``num_classes`` classes and ``img_size`` px
    inputs (see :class:`TwoBranchFER` and :class:`BaselineFER`)."""
    if cfg.arch not in _MODEL_REGISTRY:
        raise ValueError(f"unknown model.arch {cfg.arch!r}; choose one of {list_models()}")
    return _MODEL_REGISTRY[cfg.arch](cfg, num_classes, img_size)
