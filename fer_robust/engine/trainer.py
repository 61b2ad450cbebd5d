"""The staged trainer, on Hugging Face accelerate.

Read top to bottom: :meth:`Trainer.setup` builds data, model, optimiser and scheduler and hands
them to accelerate; :meth:`Trainer.fit` runs the stages epoch by epoch. Each epoch is

    begin_epoch (the stage decides)  ->  train_one_epoch  ->  end_epoch (the method's figures)
        ->  evaluate(val)  ->  log  ->  checkpoint

Every training step is the same whatever the method (``method.name``, :mod:`fer_robust.methods`):
the method runs the forward pass, the trainer computes the loss terms the stage weights (the method
supplies its own), and after the step the method may decide (SCN relabels).

The same command runs on this CPU, on one GPU, and under ``accelerate launch`` on many GPUs or
nodes. ``optim.batch_size`` is per process (accelerate's convention); the effective batch is
``batch_size x processes x grad_accum_steps``.

Why this file is one piece, over 500 lines: :meth:`Trainer.setup` builds the run's state
(model, optimiser, per-sample state, loss history, noise gate, DCL memory, teacher, method),
:meth:`Trainer._trainer_tensors` and :meth:`Trainer._restore` save and restore exactly that state,
and the loop reads and updates it. A new piece of state touches all three, so they stay in one
view. What changes for other reasons lives beside it: the run's datasets and label noise
(:mod:`~fer_robust.engine.run_data`), the classification terms and fit figures
(:mod:`~fer_robust.engine.loss_terms`), the epoch's log line
(:mod:`~fer_robust.engine.run_logging`), the eval-mode passes (:mod:`~fer_robust.engine.evaluation`),
checkpoints on disk (:mod:`~fer_robust.engine.checkpoint`), the hold on the run directory
(:mod:`~fer_robust.engine.run_dir`).
"""
from __future__ import annotations

import time
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import torch
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm.auto import tqdm

from fer_robust.config import Config
from fer_robust.config_io import save_config
from fer_robust.data.loaders import build_eval_loader, build_train_loader
from fer_robust.data.noise import save_noisy_labels
from fer_robust.data.samplers import build_sampler
from fer_robust.engine.checkpoint import (CheckpointError, CheckpointManager, ResumePoint,
                                         save_model_weights)
from fer_robust.engine.distributed import build_accelerator, run_on_main
from fer_robust.engine.evaluation import (SamplePassResult, classification_metrics, per_sample_pass,
                                         predict_logits)
from fer_robust.engine.loss_terms import classification_terms, classified_mask, fit_figures
from fer_robust.engine.flip_consistency import FlipConsistency
from fer_robust.engine.mixup import BatchMixer, mix_images
from fer_robust.engine.protocol import (protocol_choices, protocol_comment, protocol_line,
                                       selection_record)
from fer_robust.engine.run_data import apply_label_noise, eval_view, load_datasets
from fer_robust.engine.run_dir import RunDirError, RunDirLock, hold_run_dir
from fer_robust.engine.run_logging import MetricsLog, epoch_line
from fer_robust.engine.sample_state import SampleState
from fer_robust.engine.stages import Stage, StageInputs, build_stage
from fer_robust.engine.teacher import TEACHER_PREFIX, PassTeacher
from fer_robust.methods import build_method
from fer_robust.models.factory import build_model
from fer_robust.robust.gmm_split import LossHistory
from fer_robust.robust.noise_rate import NoiseGate
from fer_robust.utils import atomic_save_npz, atomic_write_json, seed_everything
from fer_robust.validation import validate

# classified_mask lives in loss_terms; it stays importable from here, where it was first.
__all__ = ["Trainer", "NonFiniteLossError", "RunDirError", "classified_mask"]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite (names the epoch, step and term)."""


class Trainer:
    """Runs ``cfg.stages`` on ``cfg.data`` with ``cfg.model``, writing everything to ``run_dir``.

    Files in the run directory: ``config.yaml`` (resolved config), ``metrics.jsonl`` (one line
    per epoch), ``checkpoints/epoch_XXX`` (+ ``checkpoints/latest``), ``best_model.safetensors``
    and ``best.json`` (chosen by validation accuracy, never test), ``noisy_labels.npz`` when noise
    is injected, and ``samples/epoch_XXX.npz`` with the per-sample state of robust stages.
    """

    def __init__(self, cfg: Config, resume: bool = False, cpu: bool = False,
                 resume_inexact: bool = False):
        # The tools validated the config they loaded; one built or edited in Python is held to the
        # same checks here, before anything is read or built.
        validate(cfg)
        self.cfg = cfg
        self.run_dir = Path(cfg.output_dir)
        self.resume = resume
        # Resume from a checkpoint without its random states when no whole one is kept (the
        # first metrics record after it says so); see CheckpointManager.resume_point.
        self.resume_inexact = resume_inexact
        # Fields for the next metrics record (e.g. that the resume was inexact).
        self._record_notes: dict = {}
        # The main process's hold on run_dir, from setup() until fit() ends (engine.run_dir).
        self._run_lock: RunDirLock | None = None
        self.accelerator = build_accelerator(cfg.mixed_precision, cfg.optim.grad_accum_steps,
                                             self.run_dir, cfg.log_tensorboard, cpu=cpu)
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        self.start_epoch = 0
        self.num_updates = 0
        self.best = {"epoch": -1, "val_accuracy": -1.0}

    # ------------------------------------------------------------------------------------------
    # setup
    # ------------------------------------------------------------------------------------------
    def setup(self) -> "Trainer":
        """Hold the run directory (one run writes into it at a time: :mod:`fer_robust.engine.
        run_dir`), then build everything. The hold lasts until :meth:`fit` ends, or ends here if
        the setup fails."""
        self._hold_run_dir()
        try:
            return self._build()
        except BaseException:
            self.release_run_dir()
            raise

    def _hold_run_dir(self) -> None:
        def hold() -> str | None:
            try:
                self._run_lock = hold_run_dir(self.cfg.output_dir)
            except RunDirError as e:
                return str(e)
            return None
        refused = run_on_main(self.accelerator, hold)  # every process stops, or none
        if refused is not None:
            raise RunDirError(refused)

    def release_run_dir(self) -> None:
        """End this process's hold on the run directory (:meth:`fit` does, however it ends)."""
        if self._run_lock is not None:
            self._run_lock.release()

    def _build(self) -> "Trainer":
        cfg, acc = self.cfg, self.accelerator
        self._check_run_dir()
        seed_everything(cfg.seed)

        self.train_set, self.val_set = load_datasets(cfg)  # cached by build_dataset if configured
        self.class_names = self.train_set.classes
        self.num_classes = len(self.class_names)
        true_labels, _ = apply_label_noise(cfg, self.train_set)
        # Every protocol choice, as the run's first line (and at the top of its config.yaml).
        self.protocol = protocol_choices(cfg, self.class_names)
        acc.print(protocol_line(self.protocol))
        # Made after the noise: the per-sample pass must score the labels training is given.
        self.train_eval_set = eval_view(self.train_set, cfg)
        self.sample_state = SampleState(self.train_set.targets, self.num_classes,
                                        true_labels=true_labels)

        self.sampler = build_sampler(cfg.data.sampler, self.train_set.targets, cfg.seed)
        train_loader = build_train_loader(self.train_set, cfg.optim.batch_size, cfg.data.num_workers,
                                          self.sampler)
        pass_loader = build_eval_loader(self.train_eval_set, cfg.optim.eval_batch_size,
                                        cfg.data.num_workers)
        val_loader = (build_eval_loader(self.val_set, cfg.optim.eval_batch_size, cfg.data.num_workers)
                      if self.val_set is not None else None)

        self.model = build_model(cfg.model, self.num_classes, cfg.data.img_size)
        self.embed_dim = self.model.embed_dim
        # Where the initial weights came from, printed first and kept in the first metrics record.
        self.pretrained_source = self.model.backbone.pretrained_source
        optimizer = create_optimizer_v2(self.model, opt=cfg.optim.opt, lr=cfg.optim.lr,
                                        weight_decay=cfg.optim.weight_decay,
                                        momentum=cfg.optim.momentum)
        self.stages = self._build_stages()
        self.total_epochs = sum(st.cfg.epochs for st in self.stages)
        self.method = build_method(cfg, len(self.train_set), self.num_classes)
        self.method.bind_training_set(self.train_set)

        self.dcl = None
        if any(st.weight("dcl") > 0 for st in self.stages):
            from fer_robust.losses.dcl import DistributionContrastiveLoss
            self.dcl = DistributionContrastiveLoss(self.num_classes, self.embed_dim,
                                                   cfg.robust.dcl).to(self.device)
        # The losses of the earlier passes (robust.split.loss_window) and the noise gate's reading
        # (robust.noise_gate). The decision that updates them runs on the main process, the one
        # that saves them with each checkpoint.
        self.loss_history = LossHistory(len(self.train_set), cfg.robust.split.loss_window)
        self.noise_gate = NoiseGate(cfg.robust.noise_gate.threshold,
                                    cfg.robust.noise_gate.anchor_quantile)
        # The moving average the robust stages' pass reads (robust.teacher_ema), started at the
        # first robust epoch.
        self.teacher = PassTeacher(cfg.robust.teacher_ema) if cfg.robust.teacher_ema > 0 else None
        # Mixup of the robust stages' batches (robust.mixup_alpha), unless the noise gate took
        # the labels as clean (robust.noise_gate.keep_mixup).
        self.mixer = (BatchMixer(cfg.robust.mixup_alpha, cfg.seed)
                      if cfg.robust.mixup_alpha > 0 else None)
        # The mirrored view's consistency in the robust stages (robust.flip_consistency), off
        # with mixup once the noise gate takes the labels as clean.
        self.flip_consistency = (FlipConsistency(cfg.robust.flip_consistency)
                                 if cfg.robust.flip_consistency.weight > 0 else None)

        (self.model, self.optimizer, self.train_loader,
         self.pass_loader) = acc.prepare(self.model, optimizer, train_loader, pass_loader)
        self.val_loader = acc.prepare(val_loader) if val_loader is not None else None
        # timm schedulers are stepped by us per optimiser update (not prepared: accelerate would
        # step them once per process and drop step_update).
        updates_per_epoch = max(len(self.train_loader) // cfg.optim.grad_accum_steps, 1)
        self.scheduler, _ = create_scheduler_v2(
            optimizer, sched=cfg.optim.sched, num_epochs=self.total_epochs,
            warmup_epochs=cfg.optim.warmup_epochs, min_lr=cfg.optim.min_lr,
            decay_epochs=cfg.optim.decay_epochs, decay_rate=cfg.optim.decay_rate,
            step_on_epochs=False, updates_per_epoch=updates_per_epoch)

        self.checkpoints = CheckpointManager(self.run_dir, acc,
                                             protected_epochs=self.stage_end_checkpoints())
        self.metrics_log = MetricsLog(self.run_dir / "metrics.jsonl", enabled=self.is_main)
        start = self._resume_point() if self.resume else None
        if start is not None and start.path is not None:
            self._restore(start)
        elif self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml", protocol_comment(self.protocol))
            atomic_write_json(self.run_dir / "classes.json", list(self.class_names))
            if true_labels is not None:
                save_noisy_labels(self.run_dir / "noisy_labels.npz", self.train_set.targets,
                                  true_labels, self.train_set.targets != true_labels)
        if cfg.log_tensorboard:
            acc.init_trackers("tensorboard")
        acc.print(f"initial weights: {self.pretrained_source}")
        acc.wait_for_everyone()
        return self

    def _check_run_dir(self) -> None:
        has_run = (self.run_dir / "checkpoints").is_dir() or (self.run_dir / "metrics.jsonl").exists()
        if self.resume and not (has_run or (self.run_dir / "config.yaml").is_file()):
            raise RunDirError(f"--resume: {self.run_dir} holds no run to resume")
        if not self.resume and has_run:
            raise RunDirError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                              "choose another output_dir (nothing was overwritten)")

    def _build_stages(self) -> list[Stage]:
        stages, first = [], 0
        for st_cfg in self.cfg.stages:
            if st_cfg.epochs == 0:
                continue  # a stage with zero epochs is skipped
            stages.append(build_stage(st_cfg, first, self.cfg.robust.pass_every))
            first += st_cfg.epochs
        return stages

    def stage_end_checkpoints(self) -> set[int]:
        """The epochs whose checkpoints are kept for good (``keep_stage_checkpoints``): the last
        epoch of every stage but the final one, e.g. the end of the warm-up, from which the
        robust stages of another config can be branched."""
        if not self.cfg.keep_stage_checkpoints:
            return set()
        return {st.first_epoch + st.cfg.epochs - 1 for st in self.stages[:-1]}

    def stage_at(self, epoch: int) -> Stage:
        for st in self.stages:
            if st.first_epoch <= epoch < st.first_epoch + st.cfg.epochs:
                return st
        raise IndexError(epoch)

    # ------------------------------------------------------------------------------------------
    # checkpoint state
    # ------------------------------------------------------------------------------------------
    def _trainer_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {f"sample_state.{k}": v for k, v in self.sample_state.state_dict().items()}
        tensors.update({f"loss_history.{k}": torch.as_tensor(v)
                        for k, v in self.loss_history.state_dict().items()})
        tensors.update({f"noise_gate.{k}": v for k, v in self.noise_gate.state_dict().items()})
        if self.dcl is not None:
            tensors.update({f"dcl.{k}": v for k, v in self.dcl.state_dict().items()})
        tensors.update({f"method.{k}": v for k, v in self.method.state_dict().items()})
        if self.teacher is not None:
            tensors.update({f"{TEACHER_PREFIX}{k}": v
                            for k, v in self.teacher.state_dict().items()})
        return tensors

    def _resume_point(self) -> ResumePoint:
        """Where ``--resume`` starts (see :meth:`CheckpointManager.resume_point`), with a warning
        for every damaged checkpoint passed over. Without any checkpoint (a kill after an epoch's
        metrics line, before its first checkpoint) the run starts again from epoch 0:
        ``metrics.jsonl`` keeps what a checkpoint covers, which is nothing."""
        acc = self.accelerator
        if self.is_main:
            self.checkpoints.clean_leftovers()
        acc.wait_for_everyone()
        start = self.checkpoints.resume_point(allow_inexact=self.resume_inexact)
        if self.is_main:
            for skipped in start.skipped:
                warnings.warn(f"checkpoint {skipped} is damaged; resuming from an earlier one",
                              UserWarning, stacklevel=3)
            if start.path is None:
                warnings.warn(f"--resume: no checkpoint in {self.run_dir / 'checkpoints'}; the "
                              "run starts again from epoch 0", UserWarning, stacklevel=3)
                self.metrics_log.truncate_after(-1)
                for name in ("best.json", "best_model.safetensors"):
                    (self.run_dir / name).unlink(missing_ok=True)
        acc.wait_for_everyone()
        return start

    def _restore(self, start: ResumePoint) -> None:
        path = start.path
        scalars, tensors = self.checkpoints.load(path)

        def section(prefix):
            return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        saved = section("sample_state.")
        if "given_labels" in saved and len(saved["given_labels"]) != len(self.train_set):
            # Every per-sample array is indexed by dataset position: another image count means
            # other images behind the indices, so no resume can be exact.
            raise CheckpointError(
                f"{path} covers {len(saved['given_labels'])} training images, the dataset now has "
                f"{len(self.train_set)} (images added, removed or skipped since the run started): "
                "restore the images the run was started with, or start a new run")
        self.sample_state.load_state_dict(saved)
        self.loss_history.load_state_dict(section("loss_history."))
        self.noise_gate.load_state_dict(section("noise_gate."))
        if self.dcl is not None:
            self.dcl.load_state_dict(section("dcl."))
        self.method.load_state_dict(section("method."))
        if self.teacher is not None:
            self.teacher.load_state_dict(self.accelerator.unwrap_model(self.model),
                                         section(TEACHER_PREFIX))
        self.start_epoch = scalars["epoch"] + 1
        self.num_updates = scalars["num_updates"]
        self.best = scalars["best"]
        self.metrics_log.truncate_after(scalars["epoch"])
        self.accelerator.print(f"resumed from {path} at epoch {self.start_epoch}")
        if start.inexact:
            if self.is_main:
                warnings.warn(f"--resume-inexact: {start.inexact}; the run no longer replays an "
                              "uninterrupted one exactly (recorded in metrics.jsonl)",
                              UserWarning, stacklevel=3)
            self._record_notes["resume_inexact"] = start.inexact

    def save_sample_state(self, epoch: int, extra: dict[str, np.ndarray] | None = None) -> None:
        if self.is_main:
            arrays = self.sample_state.as_arrays()
            arrays.update(extra or {})
            atomic_save_npz(self.run_dir / "samples" / f"epoch_{epoch:03d}.npz", **arrays)

    # ------------------------------------------------------------------------------------------
    # the loop
    # ------------------------------------------------------------------------------------------
    def fit(self, stop_after_epoch: int | None = None, end_training: bool = True) -> dict:
        """Run the remaining epochs; return the last epoch's metrics record.

        ``stop_after_epoch`` ends the process after that epoch's checkpoint (for schedulers with
        time limits); ``--resume`` then continues exactly where it stopped. ``end_training=False``
        leaves accelerate's trackers and process group up, for callers that go on to evaluate or
        train again in the same processes (``tools/benchmark.py``); they call
        ``accelerator.end_training()`` themselves.

        The run directory is released when this returns or raises (a Ctrl-C, a full disk).
        """
        try:
            return self._run_epochs(stop_after_epoch, end_training)
        finally:
            self.release_run_dir()

    def _run_epochs(self, stop_after_epoch: int | None, end_training: bool) -> dict:
        record: dict = {}
        for epoch in range(self.start_epoch, self.total_epochs):
            stage = self.stage_at(epoch)
            t0 = time.perf_counter()
            robust_metrics = self.begin_epoch(stage, epoch)
            train_metrics = self.train_one_epoch(epoch, stage)
            method_metrics = self.end_epoch(epoch)
            val = self.evaluate()
            seconds = time.perf_counter() - t0
            val_metrics = {} if val is None else {
                "val_accuracy": val["accuracy"], "val_mean_class_accuracy": val["mean_class_accuracy"],
                "val_macro_f1": val["macro_f1"]}
            record = {"epoch": epoch, "stage": stage.name, "kind": stage.kind,
                      "lr": self.optimizer.param_groups[0]["lr"], **train_metrics, **val_metrics,
                      **robust_metrics, **method_metrics, "epoch_seconds": seconds,
                      **selection_record(self.cfg.data.protocol)}
            if epoch == 0:
                record["pretrained"] = self.pretrained_source
            record.update(self._record_notes)
            self._record_notes = {}
            if self.device.type == "cuda":
                record["peak_memory_mib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
            if val is not None and val["accuracy"] > self.best["val_accuracy"]:
                self.best = {"epoch": epoch, "val_accuracy": val["accuracy"],
                             "val_mean_class_accuracy": val["mean_class_accuracy"]}
                if self.is_main:
                    save_model_weights(self.accelerator.unwrap_model(self.model),
                                       self.run_dir / "best_model.safetensors")
                    atomic_write_json(self.run_dir / "best.json", self.best)
            self.metrics_log.append(record)
            if self.cfg.log_tensorboard:
                self.accelerator.log({k: v for k, v in record.items()
                                      if isinstance(v, (int, float))}, step=epoch)
            self.accelerator.print(epoch_line(record))
            stopping = epoch == stop_after_epoch
            last = epoch == self.total_epochs - 1
            if (last or stopping or epoch in self.checkpoints.protected_epochs
                    or (epoch + 1) % max(self.cfg.checkpoint_every, 1) == 0):
                self.checkpoints.save(epoch, {"epoch": epoch, "num_updates": self.num_updates,
                                              "best": self.best}, self._trainer_tensors())
            if stopping and not last:
                self.accelerator.print(f"stopping after epoch {epoch}; continue with --resume")
                if end_training:
                    self.accelerator.end_training()
                return record
        if self.total_epochs > 0 and self.start_epoch < self.total_epochs:
            # The last epoch's fit of the given labels, in eval mode on un-augmented images.
            record.update(self.final_fit_figures())
            if self.is_main:
                atomic_write_json(self.run_dir / "final_fit.json",
                                  {k: v for k, v in record.items() if k.startswith("final_")})
        if self.is_main and self.total_epochs > 0:
            save_model_weights(self.accelerator.unwrap_model(self.model),
                               self.run_dir / "last_model.safetensors")
        self.accelerator.end_training()
        return record

    def final_fit_figures(self) -> dict[str, float]:
        """``final_train_accuracy_given`` and ``final_memorised_share`` (see
        :func:`~fer_robust.engine.loss_terms.fit_figures`)
        of the current model, from one eval-mode pass over the training split."""
        logits, labels, index = predict_logits(self.model, self.pass_loader, self.accelerator,
                                               progress=self.cfg.progress_bar)
        agree = logits.argmax(1) == labels
        changed = self.sample_state.changed_mask
        counts = [agree.sum(), len(agree), 0, 0]
        if changed is not None:
            counts[2:] = [changed[index].sum(), (agree & changed[index]).sum()]
        return fit_figures(torch.tensor(np.asarray(counts, np.float64)), changed is not None,
                            prefix="final_")

    def begin_epoch(self, stage: Stage, epoch: int) -> dict:
        """Let ``stage`` set what every sample trains on in ``epoch``; return what it logs.

        On the epochs the stage asks for one, the trainer runs the per-sample pass and hands it
        over; after the stage's decision it refills DCL's memory with the clean samples'
        embeddings and saves the per-sample state (``samples/epoch_XXX.npz``).
        """
        if self.teacher is not None and stage.robust:
            self.teacher.start(self.accelerator.unwrap_model(self.model))
        sample_pass = self.run_sample_pass() if stage.needs_sample_pass(epoch) else None
        metrics = stage.on_epoch_start(StageInputs(
            epoch, self.sample_state, self.cfg.robust, self.num_classes,
            loss_history=self.loss_history, noise_gate=self.noise_gate, sample_pass=sample_pass,
            run_on_main=partial(run_on_main, self.accelerator)))
        if sample_pass is not None:
            self._refill_dcl_memory(sample_pass, epoch)
            self.save_sample_state(epoch, extra={"loss": sample_pass.loss, "pred": sample_pass.pred,
                                                 "prob": sample_pass.prob})
        return metrics

    def end_epoch(self, epoch: int) -> dict:
        """The method's figures of the epoch; saves ``samples/epoch_XXX.npz`` (the sample state
        after the epoch, with the method's arrays) when the method keeps per-sample arrays (SCN:
        the training labels after the epoch's relabelling and each image's importance)."""
        metrics, arrays = self.method.end_epoch(epoch, self.sample_state)
        if arrays is not None:
            self.save_sample_state(epoch, extra=arrays)
        return metrics

    def run_sample_pass(self) -> SamplePassResult:
        """The pass the robust decision reads: the model's, or its moving average's once that has
        started (``robust.teacher_ema``)."""
        model = self.teacher.module if self.teacher is not None and self.teacher.started \
            else self.model
        return per_sample_pass(model, self.pass_loader, self.accelerator,
                               progress=self.cfg.progress_bar, hflip=self.cfg.robust.pass_hflip)

    def _refill_dcl_memory(self, sample_pass: SamplePassResult, epoch: int) -> None:
        """Fill the DCL memory with this pass's clean embeddings (eval-mode, so the class
        statistics describe the current model rather than a mix of older training steps)."""
        if self.dcl is None:
            return
        self.dcl.reset_memory()
        clean = np.flatnonzero(self.sample_state.clean_mask)
        order = np.random.default_rng(self.cfg.seed + epoch).permutation(clean)
        labels = self.sample_state.given_labels[order]
        self.dcl.update_memory(torch.from_numpy(sample_pass.embedding[order]).to(self.device),
                               torch.from_numpy(labels).to(self.device))

    def evaluate(self) -> dict | None:
        """Validation metrics, or None under a protocol without a validation split."""
        if self.val_loader is None:
            return None
        logits, labels, _ = predict_logits(self.model, self.val_loader, self.accelerator,
                                           progress=self.cfg.progress_bar)
        return classification_metrics(logits, labels, self.class_names)

    def compute_losses(self, out: dict, labels: torch.Tensor, index: torch.Tensor,
                       stage: Stage, mix_weight: float | None = None) -> dict[str, torch.Tensor]:
        """Every loss term the stage weights, each a scalar tensor: the trainer's own, below, and
        the method's (:meth:`fer_robust.methods.base.Method.own_loss_terms`).

        ce / local_ce: cross-entropy on the sample's training label (its given label unless the
            method relabelled it: ``SampleState.train_labels``; generalised cross-entropy with
            ``robust.clean_loss_q`` in robust stages when it is above 0), weighted per sample by
            ``ce_weight``
            (0 for samples the split called noisy), averaged over the samples that count or over
            the batch (``robust.loss_normalization``). With
            ``model.mim.classify_masked`` off, the batch's masked images count for none of the
            classification terms.
        soft_ce: soft cross-entropy on retrieval soft labels, for relabelled samples (added to
            the global and, when present, the local logits; generalised with
            ``robust.soft_loss_q`` in robust stages when it is above 0).
        mim: the masked-image-modelling reconstruction loss.
        dcl: distribution contrastive loss on clean samples' embeddings.

        ``labels`` are the loader's (given) labels, which DCL's class statistics use.

        ``mix_weight``: the images were mixed with the reversed batch at this weight
        (:func:`fer_robust.engine.mixup.mix_images`): each classification term is
        ``lam * term(rows) + (1 - lam) * term(the partners' rows)``; DCL and the method's own terms
        read the dominant (own) image's labels.
        """
        rows = self.sample_state.batch_targets(index, labels.device)
        train_labels = rows["labels"]
        keep = classified_mask(out, len(labels), self.cfg.model.mim.classify_masked)
        keep = keep.to(rows["ce_weight"].dtype)
        ce_w = rows["ce_weight"] * keep
        terms = classification_terms(self.cfg, out, rows, keep, stage)
        if mix_weight is not None:
            partner = classification_terms(self.cfg, out, {k: v.flip(0) for k, v in rows.items()},
                                           keep, stage)
            terms = {k: mix_weight * v + (1.0 - mix_weight) * partner[k] for k, v in terms.items()}
        if stage.weight("mim") and "mim_loss" in out:
            terms["mim"] = out["mim_loss"]
        if stage.weight("dcl") and self.dcl is not None:
            terms["dcl"] = self.dcl(out["embedding"].float(), labels, ce_w > 0)
        terms.update(self.method.own_loss_terms(out, train_labels, stage, index))
        return terms

    def train_one_epoch(self, epoch: int, stage: Stage) -> dict:
        acc, cfg = self.accelerator, self.cfg
        self.model.train()
        # accelerate's loader re-seeds its sampler from its own iteration counter on every
        # __iter__; setting it to the epoch keeps the order a function of the epoch, so a resumed
        # run replays exactly the order an uninterrupted run sees.
        self.train_loader.set_epoch(epoch)
        use_mim = stage.weight("mim") > 0 and cfg.model.arch == "two_branch" and cfg.model.mim.enabled
        sums: dict[str, float] = {}
        steps = 0
        # [agree with the given label, images, changed-label images, changed ones predicted as
        # their wrong given label]: memorisation as the model trains (see fit_figures).
        fit_counts = torch.zeros(4, dtype=torch.float64, device=self.device)
        changed = self.sample_state.changed_mask
        bar = tqdm(self.train_loader, desc=f"epoch {epoch} [{stage.name}]", leave=False,
                   disable=not (cfg.progress_bar and acc.is_local_main_process))
        regularised = stage.robust and not self._labels_train_unmixed()
        mixer = self.mixer if regularised else None
        consistency = self.flip_consistency if regularised else None
        if mixer is not None:
            mixer.start_epoch(epoch, acc.process_index)
        for step, (images, labels, index) in enumerate(bar):
            mix_weight = mixer.draw() if mixer is not None else None
            if mix_weight is not None:
                images = mix_images(images, mix_weight)
            with acc.accumulate(self.model):
                if consistency is None:
                    out = self.method.forward(self.model, images, use_mim)
                else:
                    out = self.method.forward(self.model, consistency.views(images), use_mim,
                                              features=True)
                    out, consistency_term = consistency.split(out, len(labels))
                terms = self.compute_losses(out, labels, index, stage, mix_weight)
                if consistency is not None:
                    terms["flip_consistency"] = consistency_term
                for name, value in terms.items():
                    if not torch.isfinite(value):
                        raise NonFiniteLossError(f"non-finite loss at epoch {epoch}, step {step}: "
                                                 f"term '{name}' = {value.item()}")
                loss = sum(self.term_weight(stage, name) * value for name, value in terms.items())
                acc.backward(loss)
                if acc.sync_gradients and cfg.optim.clip_grad > 0:
                    acc.clip_grad_norm_(self.model.parameters(), cfg.optim.clip_grad)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            if acc.sync_gradients:
                self.num_updates += 1
                self.scheduler.step_update(num_updates=self.num_updates)
                if self.teacher is not None and stage.robust:
                    self.teacher.update(acc.unwrap_model(self.model))
            # The method's decision about the batch (SCN: relabel), on the labels it trained on.
            self.method.after_step(out, torch.from_numpy(
                self.sample_state.train_labels[index.cpu().numpy()]).to(labels.device), index,
                epoch, self.sample_state, acc.gather)
            if self.dcl is not None and stage.weight("dcl"):
                self._update_dcl_memory(out["embedding"], labels, index,
                                        classified_mask(out, len(labels),
                                                        cfg.model.mim.classify_masked))
            with torch.no_grad():
                agree = out["logits"].argmax(1) == labels
                fit_counts[0] += agree.sum()
                fit_counts[1] += len(labels)
                if changed is not None:
                    batch_changed = torch.from_numpy(changed[index.cpu().numpy()]).to(agree.device)
                    fit_counts[2] += batch_changed.sum()
                    fit_counts[3] += (agree & batch_changed).sum()
            steps += 1
            sums["loss"] = sums.get("loss", 0.0) + loss.item()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            if steps % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / steps:.4f}")
        if steps == 0:
            raise RuntimeError("the training loader yielded no batch (dataset smaller than a batch?)")
        # Average over processes so every process logs the same numbers.
        names = sorted(sums)
        means = acc.reduce(torch.tensor([sums[n] / steps for n in names], device=self.device),
                           reduction="mean")
        record = {("loss" if n == "loss" else f"loss_{n}"): float(v) for n, v in zip(names, means)}
        return {**record, **fit_figures(acc.reduce(fit_counts, reduction="sum"), changed is not None)}

    def term_weight(self, stage: Stage, name: str) -> float:
        """The weight of loss term ``name`` in ``stage``: the stage's ``loss_weights``, except the
        robust stages' flip consistency, which is the method's (``robust.flip_consistency.weight``)."""
        if name == "flip_consistency":
            return self.cfg.robust.flip_consistency.weight
        return stage.weight(name)

    def _labels_train_unmixed(self) -> bool:
        """The noise gate took the labels as clean and the robust batches stop mixing
        (``robust.noise_gate.keep_mixup`` off)."""
        return self.noise_gate.labels_look_clean and not self.cfg.robust.noise_gate.keep_mixup

    @torch.no_grad()
    def _update_dcl_memory(self, embedding: torch.Tensor, labels: torch.Tensor,
                           index: torch.Tensor, classified: torch.Tensor) -> None:
        """FIFO-update the DCL memory with this step's clean embeddings from every process
        (``classified``: the images that count for classification, see :func:`classified_mask`)."""
        emb, lab, idx, counted = self.accelerator.gather(
            (embedding.detach().float(), labels, index, classified))
        clean = torch.from_numpy(self.sample_state.ce_weight[idx.cpu().numpy()] > 0).to(emb.device)
        clean &= counted.to(emb.device)
        if clean.any():
            self.dcl.update_memory(emb[clean], lab[clean])
