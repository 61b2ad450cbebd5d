"""Checking a run's config: the step between reading it and building anything from it.

:func:`load_config` is the way in for the tools, the benchmark and the Python API: it reads the
config (:func:`fer_robust.config_io.read_config`: defaults ⊕ YAML ⊕ overrides, keys and types
checked) and then :func:`validate` checks its values: ranges, rules across fields, and the names
that registries own (dataset, noise kind, architecture, stage kind, method), the timm backbone and
optimiser, and that a named weight file exists. Each failure is one
:class:`~fer_robust.config.ConfigError` naming the key (and, for a name, the known ones), raised
before any data is read or any model built. :class:`~fer_robust.engine.trainer.Trainer` runs
:func:`validate` again on the config it is given, so a config built in Python is held to the same
checks.

This module sits above :mod:`fer_robust.config` and the registries: it reads the registries, none
of them reads it, so ``config.py`` stays free of imports from the package.
"""
from __future__ import annotations

import difflib
import os
import typing
from pathlib import Path
from typing import Any

from fer_robust.config import Config, ConfigError
from fer_robust.config_io import read_config

__all__ = ["load_config", "validate", "registered_names", "SCHEDULERS"]


def load_config(path: str | os.PathLike | None = None,
                overrides: list[str] | None = None) -> Config:
    """Defaults ⊕ YAML file (with its ``_base_`` chain) ⊕ command-line overrides, validated."""
    cfg = read_config(path, overrides)
    validate(cfg)
    return cfg


def registered_names() -> dict[str, list[str]]:
    """The names each registry accepts, by the config key that names one.

    The registries are imported when asked, not with this module: they bring torch and timm, which
    a tool's ``--help`` or a config check should not wait for.
    """
    from fer_robust.data.noise import NOISE_KINDS
    from fer_robust.data.registry import list_datasets
    from fer_robust.engine.stages import STAGE_KINDS
    from fer_robust.methods import list_methods
    from fer_robust.models.factory import list_models
    return {"data.name": list_datasets(), "data.noise.type": list(NOISE_KINDS),
            "model.arch": list_models(), "stages.kind": list(STAGE_KINDS),
            "method.name": list_methods()}


# Schedules the trainer can step per update (timm's create_scheduler_v2 names; 'plateau' steps on
# epochs only and 'none' gives no scheduler to step).
SCHEDULERS: tuple[str, ...] = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt",
                               "constant")

# Numeric ranges checked at load: (key, test, what the test requires).
_RANGES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("data.img_size", lambda v: v >= 8, ">= 8"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.demo_train_per_class", lambda v: v >= 1, ">= 1"),
    ("data.demo_val_per_class", lambda v: v >= 1, ">= 1"),
    ("data.demo_test_per_class", lambda v: v >= 1, ">= 1"),
    ("data.augment.hflip", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.augment.random_erasing", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.augment.crop_scale", lambda v: 0 < v[0] <= v[1] <= 1, "0 < low <= high <= 1"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.min_lr", lambda v: v >= 0, ">= 0"),
    ("optim.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("optim.decay_epochs", lambda v: v > 0, "> 0"),
    ("optim.decay_rate", lambda v: v > 0, "> 0"),
    ("optim.batch_size", lambda v: v >= 1, ">= 1"),
    ("optim.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("optim.grad_accum_steps", lambda v: v >= 1, ">= 1"),
    ("optim.clip_grad", lambda v: v >= 0, ">= 0"),
    ("optim.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.drop_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.local_dim", lambda v: v >= 1, ">= 1"),
    ("model.local_grid", lambda v: v >= 1, ">= 1"),
    ("model.mim.patch_size", lambda v: v >= 1, ">= 1"),
    ("model.mim.mask_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.mim.masked_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("robust.split.threshold", lambda v: 0 < v < 1, "in (0, 1) (a clean probability)"),
    ("robust.split.loss_window", lambda v: v >= 1, ">= 1"),
    ("robust.relabel.k", lambda v: v >= 1, ">= 1"),
    ("robust.relabel.min_confidence", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.relabel.sharpen", lambda v: v > 0, "> 0"),
    ("robust.relabel.model_weight", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.relabel.given_floor", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("robust.dcl.temperature", lambda v: v > 0, "> 0"),
    ("robust.pass_every", lambda v: v >= 1, ">= 1"),
    ("robust.clean_loss_q", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.soft_loss_q", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.teacher_ema", lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
    ("robust.mixup_alpha", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("robust.noise_gate.threshold", lambda v: 0 <= v < 1,
     "in [0, 1) (an estimated noise rate; 0 = off)"),
    ("robust.noise_gate.anchor_quantile", lambda v: 0 < v < 1, "in (0, 1)"),
    ("robust.flip_consistency.weight", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("robust.flip_consistency.erasing_prob", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.flip_consistency.erasing_scale", lambda v: 0 < v[0] <= v[1] < 1,
     "0 < low <= high < 1"),
    ("robust.flip_consistency.erasing_ratio", lambda v: 0 < v[0] <= v[1], "0 < low <= high"),
    ("checkpoint_every", lambda v: v >= 1, ">= 1"),
]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _not_known(key: str, value: str, known: list[str], what: str) -> ConfigError:
    """An unknown name, with the closest known ones (difflib) to say what was probably meant."""
    close = difflib.get_close_matches(value, known, n=5, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return ConfigError(f"{key!r}: {value!r} is not a known {what}{hint}")


def _validate_names(cfg: Config) -> None:
    """The names other libraries own: timm's models and optimisers, and the schedules."""
    import timm
    from timm.optim import list_optimizers

    if not timm.is_model(cfg.model.backbone):
        raise _not_known("model.backbone", cfg.model.backbone, timm.list_models(), "timm model")
    # timm reads 'lookahead_<opt>' as <opt> wrapped in Lookahead.
    opt = cfg.optim.opt.lower().removeprefix("lookahead_")
    if opt not in list_optimizers():
        raise _not_known("optim.opt", cfg.optim.opt, list_optimizers(), "timm optimizer")
    if cfg.optim.sched not in SCHEDULERS:
        raise ConfigError(f"'optim.sched': {cfg.optim.sched!r} is not one of {list(SCHEDULERS)}")


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express, value ranges, and the registered
    names: every value a run would only trip over later (at model build, optimiser creation or
    data loading) fails here, as one :class:`ConfigError` naming the key."""
    if not cfg.stages:
        raise ConfigError("'stages': at least one stage is needed")
    names = registered_names()
    named = [("data.name", "data.name", cfg.data.name),
             ("data.noise.type", "data.noise.type", cfg.data.noise.type),
             ("model.arch", "model.arch", cfg.model.arch),
             ("method.name", "method.name", cfg.method.name)]
    named += [(f"stages.{i}.kind", "stages.kind", st.kind) for i, st in enumerate(cfg.stages)]
    for key, registry, value in named:
        if value not in names[registry]:
            raise ConfigError(f"{key!r}: {value!r} is not one of {names[registry]}")
    for i, st in enumerate(cfg.stages):
        if st.epochs < 0:
            raise ConfigError(f"'stages.{i}.epochs' must be >= 0, got {st.epochs}")
    # The method owns its loss terms, the architectures and the stage kinds it trains with, and
    # the ranges of its own settings.
    from fer_robust.methods import get_method
    get_method(cfg.method.name).validate(cfg)
    if sum(st.epochs for st in cfg.stages) == 0:
        raise ConfigError("'stages': all stages have zero epochs")
    for key, ok, requirement in _RANGES:
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key!r} must be {requirement}, got {value}")
    if not 0.0 <= cfg.data.noise.rate < 1.0:
        raise ConfigError(f"'data.noise.rate' must be in [0, 1), got {cfg.data.noise.rate}")
    if not 0.0 < cfg.data.train_fraction <= 1.0:
        raise ConfigError(f"'data.train_fraction' must be in (0, 1], got {cfg.data.train_fraction}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"'data.val_fraction' must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.data.val_fraction == 0.0 and cfg.data.protocol == "validation":
        raise ConfigError("'data.val_fraction' is 0, which leaves no validation split to select on; "
                          "for the papers' protocol (whole training split, no selection, last epoch "
                          "kept) set data.protocol=full_train")
    from fer_robust.data.registry import needs_root
    if needs_root(cfg.data.name) and not cfg.data.root.strip():
        raise ConfigError(f"'data.root' is empty: set it to the folder holding the "
                          f"{cfg.data.name} dataset (see data/README.md for each layout)")
    if cfg.model.expects_pretrained and not cfg.model.pretrained \
            and not cfg.model.pretrained_file.strip():
        raise ConfigError("'model.pretrained_file' is empty, but this recipe expects pretrained "
                          "weights (model.expects_pretrained): set "
                          "model.pretrained_file=/path/to/weights, or model.pretrained_file=none "
                          "to train from scratch")
    from fer_robust.models.weights import resolve_pretrained_file
    weights = resolve_pretrained_file(cfg.model.pretrained_file)
    if weights and not Path(weights).is_file():
        raise ConfigError(f"'model.pretrained_file': file not found: {weights} (give an existing "
                          "weight file, or model.pretrained_file=none to train from scratch)")
    if cfg.data.img_size % cfg.model.mim.patch_size and cfg.model.mim.enabled \
            and cfg.model.arch == "two_branch":
        raise ConfigError(f"'model.mim.patch_size' ({cfg.model.mim.patch_size}) must divide "
                          f"'data.img_size' ({cfg.data.img_size})")
    _validate_names(cfg)
