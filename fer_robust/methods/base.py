"""What a training method adds to the trainer's one training step, and the registry of methods.

Every method trains through the same step of :class:`~fer_robust.engine.trainer.Trainer`::

    method.bind_training_set(train_set)               # once, before training (votes: the votes)
    out = method.forward(model, images, mim)          # the network's outputs (EAC: and its flip's)
    terms = the trainer's terms the stage weights     # ce, local_ce, soft_ce, mim, dcl
          + method.own_loss_terms(out, labels, stage, index)  # the method's own (SCN's rank_reg)
    loss = sum(stage.weight(t) * terms[t]); backward; optimiser step
    method.after_step(out, labels, index, epoch, sample_state, gather)   # SCN: relabel
    ... after the epoch: method.end_epoch(epoch, sample_state)          # figures, per-sample arrays

``labels`` are the labels each sample trains on (``SampleState.train_labels``: the given ones
unless a method relabels). A stage weights the terms by name (``stages.N.loss_weights``); each
method says which names it knows (:attr:`Method.loss_terms`), which networks (``model.arch``) and
which stage kinds it trains with, and checks its own settings (:meth:`Method.validate`), so a term,
network or stage a method cannot use is a config error naming it.

``method.name`` chooses one: ``staged`` (the default, :class:`StagedMethod`) is this package's
system, with nothing added to the step: the two-branch network and its stages, or the plain
baseline (``model.arch=baseline``, cross-entropy in one warm-up stage). The peers register beside
it: ``scn`` (:mod:`fer_robust.methods.scn`), ``eac`` (:mod:`~fer_robust.methods.eac`) and ``gce``
(:mod:`~fer_robust.methods.gce`); so does ``votes`` (:mod:`~fer_robust.methods.votes`), the
baseline trained on FERPlus's vote distributions, the reference the noise benchmark's data size
measures the relabelling against.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from fer_robust.config import Config, ConfigError
from fer_robust.utils import register_in

__all__ = ["Method", "StagedMethod", "METHODS", "register_method", "get_method", "list_methods",
           "build_method"]

#: Every ``method.name``: the method class registered under it.
METHODS: dict[str, type["Method"]] = {}

#: The loss terms the trainer itself computes (see ``Trainer.compute_losses``).
TRAINER_TERMS = ("ce", "local_ce", "mim", "dcl", "soft_ce")


def register_method(name: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`Method` subclass as ``method.name=name`` (its
    ``name``)."""
    return register_in(METHODS, "method", name, name_attribute="name")


def list_methods() -> list[str]:
    """Names accepted by ``method.name``, in registration order."""
    return list(METHODS)


def get_method(name: str) -> type["Method"]:
    if name not in METHODS:
        raise ConfigError(f"'method.name': {name!r} is not one of {list_methods()}")
    return METHODS[name]


def build_method(cfg: Config, num_samples: int, num_classes: int) -> "Method":
    """The method ``cfg.method.name`` for a training set of ``num_samples`` images."""
    return get_method(cfg.method.name)(cfg, num_samples, num_classes)


class Method:
    """The base method: the network's own forward pass, no term of its own, no decision.

    Class attributes (checked by :meth:`validate`):
        loss_terms: the names a stage of this method may weight.
        archs: the ``model.arch`` values it trains (``None``: any).
        stage_kinds: the ``stages.N.kind`` values it trains with (``None``: any).

    Args:
        cfg: the run's config.
        num_samples: N, the training set's size (for per-sample state).
        num_classes: C.
    """
    name = "base"
    loss_terms: tuple[str, ...] = TRAINER_TERMS
    archs: tuple[str, ...] | None = None
    stage_kinds: tuple[str, ...] | None = None

    def __init__(self, cfg: Config, num_samples: int, num_classes: int) -> None:
        self.cfg = cfg
        self.num_samples = num_samples
        self.num_classes = num_classes

    # -- config ----------------------------------------------------------------------------------
    @classmethod
    def validate(cls, cfg: Config) -> None:
        """Raise :class:`ConfigError` for a network, stage kind or loss term the method cannot
        train with (subclasses add the ranges of their own settings)."""
        where = f"method.name={cls.name!r}"
        if cls.archs is not None and cfg.model.arch not in cls.archs:
            raise ConfigError(f"'model.arch': {cfg.model.arch!r} does not train under {where}; "
                              f"valid: {list(cls.archs)}")
        for i, st in enumerate(cfg.stages):
            if cls.stage_kinds is not None and st.kind not in cls.stage_kinds:
                raise ConfigError(f"'stages.{i}.kind': {st.kind!r} does not train under {where}; "
                                  f"valid: {list(cls.stage_kinds)}")
            bad = set(st.loss_weights) - set(cls.loss_terms)
            if bad:
                raise ConfigError(f"'stages.{i}.loss_weights': unknown loss term(s) {sorted(bad)} "
                                  f"under {where}; valid: {', '.join(cls.loss_terms)}")

    # -- the training step -------------------------------------------------------------------------
    def forward(self, model: torch.nn.Module, images: torch.Tensor, mim: bool,
                features: bool = False) -> dict:
        """The outputs the step's loss terms read (see ``fer_robust.models.network``);
        ``features`` adds the backbone map (``feature_map``) for the robust stages' flip
        consistency."""
        if features:
            return model(images, mim=mim, features=True)
        return model(images, mim=mim)

    def bind_training_set(self, dataset) -> None:
        """Called once by the trainer with the training split (after label noise), before the
        first step: a method that trains on more of each image than its label takes it here
        (``votes``: the annotators' vote counts, ``dataset.votes``)."""

    def own_loss_terms(self, out: dict, labels: torch.Tensor, stage,
                       index: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The method's own terms that ``stage`` weights, each a scalar tensor (``labels``: the
        ``(B,)`` labels the batch trains on; ``index``: the ``(B,)`` dataset indices of its
        images)."""
        return {}

    def after_step(self, out: dict, labels: torch.Tensor, index: torch.Tensor, epoch: int,
                   sample_state, gather: Callable) -> None:
        """Runs after every optimiser step with the step's outputs (``gather``: accelerate's, so a
        decision about the batch reaches every process)."""

    def end_epoch(self, epoch: int, sample_state) -> tuple[dict, dict[str, np.ndarray] | None]:
        """``(figures to log for the epoch, per-sample arrays to save as samples/epoch_XXX.npz
        beside the sample state, or None for no file)``."""
        return {}, None

    # -- checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, torch.Tensor]:
        """Tensors saved with every checkpoint (``method.*`` in ``trainer_state.safetensors``)."""
        return {}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        pass


@register_method("staged")
class StagedMethod(Method):
    """This package's system: every term comes from the trainer and every decision from the
    stages (the two-branch network with MIM, ARM, the GMM split, DCL and retrieval relabelling;
    or, with ``model.arch=baseline`` and one warm-up stage on ``ce``, plain cross-entropy)."""
    archs = ("two_branch", "baseline", "arm")

    @classmethod
    def validate(cls, cfg: Config) -> None:
        super().validate(cfg)
        robust_stage = any(st.kind in ("self_paced", "semi_supervised") for st in cfg.stages)
        if (cfg.robust.flip_consistency.weight > 0 and robust_stage
                and cfg.model.arch != "two_branch"):
            raise ConfigError("'robust.flip_consistency.weight' > 0 compares the two-branch "
                              f"network's backbone maps; model.arch={cfg.model.arch!r} has none "
                              "to give (set it to 0 or model.arch=two_branch)")
