"""Training stages: what each sample trains on, decided before each epoch.

A run is a sequence of stages (``cfg.stages``). Before an epoch the trainer hands the epoch's stage
a :class:`StageInputs`: the per-sample state and, on the epochs the stage asks for one
(:meth:`Stage.needs_sample_pass`), the per-sample pass over the training set. The stage decides
which samples train on which targets with which weights and sets it on the
:class:`~fer_robust.engine.sample_state.SampleState` in one method call; the training step itself
is the same for every stage and sums the loss terms the stage weights.

- ``warmup``: every sample trains on its given label (cross-entropy, plus MIM for the two-branch
  model). DR-FER warms up before self-paced learning so per-sample losses become informative.
- ``self_paced``: every ``robust.pass_every`` epochs, a per-sample pass and the class-dependent
  GMM split; only clean samples keep their cross-entropy, and DCL regularises them.
- ``semi_supervised``: as self-paced, plus retrieval relabelling: noisy samples train on soft
  labels from their clean neighbours (soft cross-entropy, optionally only confident ones).

New kinds register with :func:`register_stage` (or, for a stage that must not outlive the
measurement that defines it, :func:`registered_stage`); ``stages.N.kind`` accepts every registered
kind.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from fer_robust.config import RobustConfig, StageConfig
from fer_robust.engine.evaluation import SamplePassResult
from fer_robust.engine.sample_state import SampleState
from fer_robust.robust.gmm_split import LossHistory
from fer_robust.robust.metrics import decision_figures
from fer_robust.robust.noise_rate import NoiseGate
from fer_robust.robust.selection import RobustDecision, split_and_relabel
from fer_robust.utils import register_in

__all__ = ["Stage", "StageInputs", "WarmupStage", "SelfPacedStage", "SemiSupervisedStage",
           "build_stage", "register_stage", "registered_stage", "STAGE_KINDS"]

#: Every ``stages.N.kind``: the stage class registered under it.
STAGE_KINDS: dict[str, type["Stage"]] = {}


def register_stage(kind: str) -> Callable[[type], type]:
    """Class decorator registering a :class:`Stage` subclass under ``kind`` (its ``kind``)."""
    return register_in(STAGE_KINDS, "stage kind", kind, name_attribute="kind")


@contextmanager
def registered_stage(kind: str, cls: type["Stage"]) -> Iterator[type["Stage"]]:
    """Register ``cls`` under ``kind`` for the duration of a ``with`` block only: for a stage that
    exists for one measurement (``benchmarks/oracle_selection.py``) and must not outlive it."""
    register_stage(kind)(cls)
    try:
        yield cls
    finally:
        STAGE_KINDS.pop(kind, None)


def _run_here(fn: Callable[[], Any]) -> Any:
    return fn()


@dataclass
class StageInputs:
    """What the trainer hands a stage before epoch ``epoch``.

    sample_state: the per-sample state; a stage changes it in one method call
        (:meth:`~SampleState.reset_to_given` or :meth:`~SampleState.apply_decision`).
    robust: the run's ``robust`` settings.
    num_classes: C.
    loss_history: the per-sample losses of the earlier passes (``robust.split.loss_window``); the
        decision appends this pass's.
    sample_pass: the per-sample pass over the training set in eval mode, run by the trainer on the
        epochs the stage asks for one (:meth:`Stage.needs_sample_pass`); ``None`` on the others.
    run_on_main: runs a function once, on the main process, and returns its result on every
        process: the GMM and FAISS work is done once and every process trains on its result.
    """
    epoch: int
    sample_state: SampleState
    robust: RobustConfig
    num_classes: int
    loss_history: LossHistory | None = None
    noise_gate: NoiseGate | None = None
    sample_pass: SamplePassResult | None = None
    run_on_main: Callable[[Callable[[], Any]], Any] = _run_here


class Stage:
    """Base stage: trains on whatever the sample state says, changes nothing.

    Args:
        cfg: the stage's config (name, kind, epochs, loss weights).
        first_epoch: the run's epoch this stage starts at.
        pass_every: ``robust.pass_every``: a robust stage decides every this many epochs.
    """
    kind = "base"
    #: Whether the stage trains on the robust decision (split and relabelling): the ``robust``
    #: loss settings (``robust.clean_loss_q``, ``robust.soft_loss_q``) apply in its epochs only.
    robust = False

    def __init__(self, cfg: StageConfig, first_epoch: int, pass_every: int = 1):
        self.cfg = cfg
        self.first_epoch = first_epoch
        self.pass_every = max(int(pass_every), 1)

    @property
    def name(self) -> str:
        return self.cfg.name

    def weight(self, term: str) -> float:
        return float(self.cfg.loss_weights.get(term, 0.0))

    def needs_sample_pass(self, epoch: int) -> bool:
        """Whether the trainer runs the per-sample pass before ``epoch`` for this stage."""
        return False

    def on_epoch_start(self, inputs: StageInputs) -> dict:
        """Set what each sample trains on in ``inputs.epoch``; return the metrics to log."""
        return {}


@register_stage("warmup")
class WarmupStage(Stage):
    def on_epoch_start(self, inputs: StageInputs) -> dict:
        inputs.sample_state.reset_to_given()
        return {}


@register_stage("self_paced")
class SelfPacedStage(Stage):
    """Per-sample pass -> GMM split (-> retrieval relabelling) -> new sample weights and targets,
    every ``pass_every`` epochs; in between, samples keep training on the last decision."""
    relabel = False
    robust = True

    def needs_sample_pass(self, epoch: int) -> bool:
        return (epoch - self.first_epoch) % self.pass_every == 0

    def decide(self, inputs: StageInputs) -> RobustDecision:
        """The decision from this epoch's per-sample pass (one call of the function
        ``tools/relabel.py`` calls, so the tool shows exactly what training does)."""
        result = inputs.sample_pass
        return split_and_relabel(result.loss, result.embedding, inputs.sample_state.given_labels,
                                 inputs.num_classes, inputs.robust.split, inputs.robust.relabel,
                                 relabel=self.relabel, probs=result.prob,
                                 history=inputs.loss_history, noise_gate=inputs.noise_gate)

    def on_epoch_start(self, inputs: StageInputs) -> dict:
        if inputs.sample_pass is None:
            return {}
        state = inputs.sample_state
        decision = inputs.run_on_main(lambda: self.decide(inputs))
        if inputs.noise_gate is not None:
            # The gate read the pass on the main process; every process holds its reading, which
            # the trainer's batches read too (robust.noise_gate.keep_mixup).
            inputs.noise_gate.load_state_dict(inputs.run_on_main(inputs.noise_gate.state_dict))
        state.apply_decision(decision)
        figures = decision_figures(decision, state.given_labels, inputs.num_classes,
                                   state.true_labels)
        metrics = {k: figures[k] for k in ("clean_ratio", "clean_ratio_per_class", "num_relabeled")}
        metrics["train_pass_accuracy_given"] = float(
            (inputs.sample_pass.pred == state.given_labels).mean())
        if inputs.noise_gate is not None:
            metrics["noise_rate_estimate"] = decision.noise_rate_estimate
            metrics["labels_taken_as_clean"] = decision.labels_taken_as_clean
        metrics.update({k: float(v) for k, v in figures.items() if k.startswith("split_")})
        metrics.update({k: figures[k] for k in ("relabel_accuracy", "relabel_accuracy_changed")
                        if k in figures})
        return metrics


@register_stage("semi_supervised")
class SemiSupervisedStage(SelfPacedStage):
    relabel = True


def build_stage(cfg: StageConfig, first_epoch: int, pass_every: int = 1) -> Stage:
    """The stage ``cfg.kind`` names (a registered kind), starting at ``first_epoch``."""
    return STAGE_KINDS[cfg.kind](cfg, first_epoch, pass_every)
