"""Training stages: what happens to the per-sample state around each epoch.

A run is a sequence of stages (``cfg.stages``). Each stage kind decides, before an epoch, which
samples train on which targets with which weights by editing the trainer's :class:`SampleState`;
the training step itself is the same for every stage and sums the loss terms the stage weights.

- ``warmup``: every sample trains on its given label (cross-entropy, plus MIM for the two-branch
  model). DR-FER warms up before self-paced learning so per-sample losses become informative.
- ``self_paced``: every ``robust.pass_every`` epochs, a per-sample pass and the class-dependent
  GMM split; only clean samples keep their cross-entropy, and DCL regularises them.
- ``semi_supervised``: as self-paced, plus retrieval relabelling: noisy samples train on soft
  labels from their clean neighbours (soft cross-entropy, optionally only confident ones).

New kinds register with :func:`register_stage`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

from fer_robust.config import StageConfig
from fer_robust.engine.distributed import broadcast_object
from fer_robust.robust.metrics import (noise_detection_metrics, per_class_clean_ratio,
                                       relabel_accuracy)
from fer_robust.robust.selection import split_and_relabel

if TYPE_CHECKING:
    from fer_robust.engine.trainer import Trainer

__all__ = ["Stage", "WarmupStage", "SelfPacedStage", "SemiSupervisedStage", "build_stage",
           "register_stage", "STAGE_KINDS"]

STAGE_KINDS: dict[str, type["Stage"]] = {}


def register_stage(kind: str) -> Callable[[type], type]:
    def deco(cls: type) -> type:
        cls.kind = kind
        STAGE_KINDS[kind] = cls
        return cls
    return deco


class Stage:
    """Base stage: trains on whatever the sample state says, changes nothing."""
    kind = "base"

    def __init__(self, cfg: StageConfig, first_epoch: int):
        self.cfg = cfg
        self.first_epoch = first_epoch

    @property
    def name(self) -> str:
        return self.cfg.name

    def weight(self, term: str) -> float:
        return float(self.cfg.loss_weights.get(term, 0.0))

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> dict:
        """Edit ``trainer.sample_state`` before training epoch ``epoch``; return metrics to log."""
        return {}


@register_stage("warmup")
class WarmupStage(Stage):
    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> dict:
        trainer.sample_state.reset_to_given()
        return {}


@register_stage("self_paced")
class SelfPacedStage(Stage):
    relabel = False

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> dict:
        if (epoch - self.first_epoch) % max(trainer.cfg.robust.pass_every, 1):
            return {}
        return robust_update(trainer, epoch, relabel=self.relabel)


@register_stage("semi_supervised")
class SemiSupervisedStage(SelfPacedStage):
    relabel = True


def build_stage(cfg: StageConfig, first_epoch: int) -> Stage:
    return STAGE_KINDS[cfg.kind](cfg, first_epoch)


def robust_update(trainer: "Trainer", epoch: int, relabel: bool) -> dict:
    """Per-sample pass -> GMM split -> (retrieval relabelling) -> new sample weights and targets.

    The pass runs on every process (sharded, gathered by index); the split and the FAISS search
    run once on the main process and their result is broadcast, so all processes train on the
    same decision.
    """
    state = trainer.sample_state
    result = trainer.run_sample_pass()
    losses = trainer.loss_history.update(result.loss)
    decision = None
    if trainer.accelerator.is_main_process:
        decision = split_and_relabel(losses, result.embedding, state.given_labels,
                                     trainer.num_classes, trainer.cfg.robust.split,
                                     trainer.cfg.robust.relabel, relabel=relabel,
                                     probs=result.prob)
    decision = broadcast_object(trainer.accelerator, decision)

    rcfg = trainer.cfg.robust.relabel
    state.clean_prob = decision.clean_prob
    state.clean_mask = decision.clean_mask
    state.ce_weight = decision.clean_mask.astype(np.float32)
    state.soft_labels = np.where(decision.relabeled_mask[:, None], decision.soft_labels, 0.0
                                 ).astype(np.float32)
    use_soft = decision.relabeled_mask & (decision.confidence >= rcfg.min_confidence)
    state.relabeled_mask = use_soft
    state.soft_weight = use_soft.astype(np.float32)

    # Fill the DCL memory with this pass's clean embeddings (eval-mode, so the class statistics
    # describe the current model rather than a mix of older training steps).
    if trainer.dcl is not None:
        trainer.dcl.reset_memory()
        clean = np.flatnonzero(decision.clean_mask)
        order = np.random.default_rng(trainer.cfg.seed + epoch).permutation(clean)
        trainer.dcl.update_memory(torch.from_numpy(result.embedding[order]).to(trainer.device),
                                  torch.from_numpy(state.given_labels[order]).to(trainer.device))

    metrics = {
        "clean_ratio": float(decision.clean_mask.mean()),
        "clean_ratio_per_class": [float(x) for x in per_class_clean_ratio(
            decision.clean_mask, state.given_labels, trainer.num_classes)],
        "num_relabeled": int(use_soft.sum()),
        "train_pass_accuracy_given": float((result.pred == state.given_labels).mean()),
    }
    if state.noise_known:
        changed = state.changed_mask
        det = noise_detection_metrics(decision.clean_prob, changed, trainer.cfg.robust.split.threshold)
        metrics.update({f"split_{k}": float(v) for k, v in det.items()})
        if relabel and decision.relabeled_mask.any():
            rel = decision.relabeled_mask
            metrics["relabel_accuracy"] = float(relabel_accuracy(decision.soft_labels[rel],
                                                                 state.true_labels[rel]))
            changed_rel = rel & changed
            if changed_rel.any():
                metrics["relabel_accuracy_changed"] = float(relabel_accuracy(
                    decision.soft_labels[changed_rel], state.true_labels[changed_rel]))
    trainer.save_sample_state(epoch, extra={"loss": result.loss, "pred": result.pred,
                                            "prob": result.prob})
    return metrics
