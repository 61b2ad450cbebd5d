"""Atomic checkpoints and model weight files, and choosing the checkpoint a resume starts from.

A checkpoint is a folder ``checkpoints/epoch_XXX`` holding accelerate's state (model as safetensors,
optimizer, grad scaler and every process's RNG state) plus the trainer's own state: scalars in
``trainer_state.json`` and per-sample arrays and loss buffers in ``trainer_state.safetensors``.
It is written under a temporary name and renamed into place, and ``checkpoints/latest`` is
replaced in one rename afterwards, so a kill during a save leaves the previous checkpoint usable.
Nothing is loaded with pickle: weights are safetensors and accelerate loads the optimizer and RNG
files with ``weights_only=True``.

Resume is exact or refuses (:meth:`CheckpointManager.resume_point`). Every file of a checkpoint is
checked before anything is loaded (:func:`checkpoint_problems`): a damaged or missing file makes
the resume fall back, with a warning, to the newest kept checkpoint that is whole, wherever
``latest`` points. accelerate's ``load_state`` only logs (at info level) when it cannot restore the
random states, and a run would then continue with other augmentations, sampling and masks than an
uninterrupted one; so a checkpoint whose random states are missing or damaged counts as damaged,
and is used only when no whole one is kept and the user asks for it (``--resume-inexact``).
"""
from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils.constants import OPTIMIZER_NAME, RNG_STATE_NAME, SAFE_MODEL_NAME, SCALER_NAME
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from fer_robust.utils import atomic_path, atomic_write_json, atomic_write_text, share_like_new_files

__all__ = ["CheckpointManager", "save_model_weights", "load_model_weights", "read_safetensors",
           "latest_checkpoint", "load_trainer_tensors", "checkpoint_problems", "ResumePoint",
           "CheckpointError"]

# The files a checkpoint must hold: accelerate's (its save_state names) and the trainer's.
MODEL_FILE, OPTIMIZER_FILE = f"{SAFE_MODEL_NAME}.safetensors", f"{OPTIMIZER_NAME}.bin"
SCALER_FILE = SCALER_NAME
TRAINER_SCALARS, TRAINER_TENSORS = "trainer_state.json", "trainer_state.safetensors"


def random_state_file(process_index: int) -> str:
    """accelerate's file of one process's random states (``random_states_<i>.pkl``)."""
    return f"{RNG_STATE_NAME}_{process_index}.pkl"


class CheckpointError(FileNotFoundError):
    """A checkpoint or run directory is missing or incomplete, or a checkpoint or weights file
    cannot be written (names the path)."""


# What a write that fails part-way raises (a full disk, a quota): OSError from Python,
# RuntimeError from torch.save's zip writer ("[enforce fail at inline_container.cc:...]"),
# SafetensorError from safetensors ("... No space left on device (os error 28)").
WRITE_ERRORS: tuple[type[BaseException], ...] = (OSError, RuntimeError, SafetensorError)


def cannot_write(path: Path, error: BaseException, what_now: str) -> CheckpointError:
    """One line for a write of ``path`` that failed: the reason, the space left on its device,
    and ``what_now``."""
    free = ""
    for folder in (path, *path.parents):
        if folder.exists():
            try:
                free = f"; {shutil.disk_usage(folder).free / 2 ** 20:.0f} MiB free on its device"
            except OSError:
                pass
            break
    return CheckpointError(f"cannot write {path}: {type(error).__name__}: {_first_line(error)}"
                           f"{free}; {what_now}")


def save_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Model state dict as safetensors, written atomically (a failed write leaves the previous
    file and is a :class:`CheckpointError` naming it)."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        try:
            save_file(state, str(tmp), metadata={"format": "pt"})
        except WRITE_ERRORS as e:
            raise cannot_write(Path(path), e, "its previous version is unchanged") from None


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file; a damaged (e.g. truncated) file is a
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"file not found: {path}")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise CheckpointError(f"damaged file {path}: {_first_line(e)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def load_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load safetensors weights saved by :func:`save_model_weights` (or accelerate), strictly:
    a damaged file, or one of another shape (e.g. another number of classes), is a
    :class:`CheckpointError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model weights not found: {path}")
    state = read_safetensors(path)
    target = model.state_dict()
    wrong = [f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
             for k, v in state.items() if k in target and v.shape != target[k].shape]
    if wrong:
        raise CheckpointError(f"{path} does not fit the model built from its config ("
                              f"{len(wrong)} tensor(s) of another shape, e.g. {wrong[0]}; "
                              "another number of classes?)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model built from its config: "
                              f"missing {missing[:5]}, unexpected {unexpected[:5]}")


def _epoch_folders(checkpoints: Path) -> list[Path]:
    """``epoch_XXX`` folders holding the three files every checkpoint has, newest first."""
    folders = [p for p in checkpoints.glob("epoch_*") if p.is_dir()
               and all((p / f).is_file() for f in (MODEL_FILE, TRAINER_SCALARS, TRAINER_TENSORS))]
    return sorted(folders, key=lambda p: p.name, reverse=True)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``checkpoints/latest`` points to or, when the pointer is missing or points to a
    folder that is gone, the newest complete ``epoch_XXX`` folder; None when there is none."""
    checkpoints = Path(run_dir) / "checkpoints"
    pointer = checkpoints / "latest"
    name = pointer.read_text().strip() if pointer.is_file() else ""
    if name.startswith("epoch_") and (checkpoints / name).is_dir():
        return checkpoints / name
    folders = _epoch_folders(checkpoints)
    return folders[0] if folders else None


def load_trainer_tensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The trainer's tensors saved in checkpoint folder ``path`` (``trainer_state.safetensors``),
    those whose key starts with ``prefix``, with the prefix removed (e.g. ``"loss_history."``)."""
    file = Path(path) / TRAINER_TENSORS
    if not file.is_file():
        raise CheckpointError(f"incomplete checkpoint {path}: {TRAINER_TENSORS} is missing")
    return {k[len(prefix):]: v for k, v in read_safetensors(file).items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------------
# Checking a checkpoint before resuming from it
# --------------------------------------------------------------------------------------------------
def _safetensors_problem(file: Path) -> str | None:
    try:
        with safe_open(str(file), framework="pt") as f:  # checks the header covers the file
            f.keys()
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        return _first_line(e)
    return None


def _zip_problem(file: Path) -> str | None:
    """torch.save writes a zip archive: its CRCs tell a damaged file without unpickling it."""
    try:
        with zipfile.ZipFile(file) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return _first_line(e)
    return f"member {bad} is damaged" if bad else None


def _random_state_problem(file: Path) -> str | None:
    """Read as accelerate's ``load_state`` reads it (which would swallow the error)."""
    from accelerate.utils import load
    try:
        states = load(file)
    except Exception as e:  # noqa: BLE001 - the reason is reported, never swallowed
        return _first_line(e)
    missing = {"random_state", "numpy_random_seed", "torch_manual_seed"} - set(states)
    return f"lacks {sorted(missing)}" if missing else None


def _scalars_problem(file: Path) -> str | None:
    try:
        scalars = json.loads(file.read_text())
    except (ValueError, OSError) as e:
        return _first_line(e)
    missing = {"epoch", "num_updates", "best"} - set(scalars if isinstance(scalars, dict) else {})
    return f"lacks {sorted(missing)}" if missing else None


def checkpoint_problems(path: Path, num_processes: int = 1, with_scaler: bool = False
                        ) -> tuple[list[str], list[str]]:
    """``(state, random)``: what is wrong with checkpoint folder ``path``, each as ``'<file>:
    <reason>'``. ``state`` covers the model, optimizer, grad scaler and trainer files; ``random``
    the random states of processes ``0 .. num_processes - 1``. Both empty: the checkpoint is whole
    and a resume from it is exact."""
    checks = {MODEL_FILE: _safetensors_problem, TRAINER_TENSORS: _safetensors_problem,
              TRAINER_SCALARS: _scalars_problem, OPTIMIZER_FILE: _zip_problem}
    if with_scaler:
        checks[SCALER_FILE] = _zip_problem
    state, random = [], []
    for name, check in checks.items():
        problem = "missing" if not (path / name).is_file() else check(path / name)
        if problem:
            state.append(f"{name}: {problem}")
    for i in range(num_processes):
        name = random_state_file(i)
        problem = "missing" if not (path / name).is_file() else _random_state_problem(path / name)
        if problem:
            random.append(f"{name}: {problem}")
    return state, random


@dataclass
class ResumePoint:
    """Where a resume starts: ``path`` (None: no checkpoint, the run starts again from epoch 0),
    ``skipped`` (newer checkpoints passed over, each with why), and ``inexact`` (why the resume
    cannot replay the uninterrupted run exactly; None when it can)."""
    path: Path | None
    skipped: list[str] = field(default_factory=list)
    inexact: str | None = None


class CheckpointManager:
    def __init__(self, run_dir: str | Path, accelerator: Accelerator, keep: int = 2,
                 protected_epochs: set[int] | frozenset[int] = frozenset()):
        """``keep``: how many of the newest checkpoints are kept; the checkpoints of
        ``protected_epochs`` (the ends of the stages, ``keep_stage_checkpoints``) are never
        pruned, so a later stage can be started again from the one before it."""
        self.dir = Path(run_dir) / "checkpoints"
        self.accelerator = accelerator
        self.keep = keep
        self.protected_epochs = set(protected_epochs)

    def save(self, epoch: int, scalars: dict, tensors: dict[str, torch.Tensor]) -> Path:
        """Write checkpoint ``epoch`` (see the module docstring). A write that fails (a full
        disk) removes what it wrote and is a :class:`CheckpointError` that names the checkpoint
        and the one a ``--resume`` continues from."""
        try:
            return self._write(epoch, scalars, tensors)
        except WRITE_ERRORS as e:
            if self.accelerator.is_main_process:
                shutil.rmtree(self.dir / f".tmp_epoch_{epoch:03d}", ignore_errors=True)
            kept = self.latest()
            what_now = (f"{kept.name} is whole: free space and continue with --resume "
                        f"{self.dir.parent}" if kept is not None else
                        f"no checkpoint is kept yet: free space and --resume {self.dir.parent} "
                        "starts the run again")
            raise cannot_write(self.dir / f"epoch_{epoch:03d}", e, what_now) from None

    def _write(self, epoch: int, scalars: dict, tensors: dict[str, torch.Tensor]) -> Path:
        acc = self.accelerator
        final = self.dir / f"epoch_{epoch:03d}"
        tmp = self.dir / f".tmp_epoch_{epoch:03d}"
        if acc.is_main_process:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        if acc.is_main_process:
            save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                      str(tmp / TRAINER_TENSORS))
            atomic_write_json(tmp / TRAINER_SCALARS, scalars)
            share_like_new_files(tmp)
            if final.exists():
                stale = self.dir / f".old_epoch_{epoch:03d}"
                final.rename(stale)
                shutil.rmtree(stale)
            tmp.rename(final)
            atomic_write_text(self.dir / "latest", final.name + "\n")
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self) -> None:
        done = sorted(p for p in self.dir.glob("epoch_*") if p.is_dir())
        protected = {f"epoch_{e:03d}" for e in self.protected_epochs}
        for p in done[: max(len(done) - self.keep, 0)]:
            if p.name not in protected:
                shutil.rmtree(p, ignore_errors=True)

    def clean_leftovers(self) -> list[str]:
        """Remove what a kill during a save leaves behind (a half-written ``.tmp_epoch_XXX``
        folder, an ``.old_epoch_XXX`` being replaced, a ``.latest.*.tmp`` pointer); their names."""
        removed = []
        for p in sorted(self.dir.glob(".*")) if self.dir.is_dir() else []:
            if p.name.startswith((".tmp_epoch_", ".old_epoch_")) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.name.startswith(".latest.") and p.name.endswith(".tmp") and p.is_file():
                p.unlink()
            else:
                continue
            removed.append(p.name)
        return removed

    def latest(self) -> Path | None:
        return latest_checkpoint(self.dir.parent)

    def candidates(self) -> list[Path]:
        """Checkpoints to resume from, best first: the one ``latest`` points to, then every
        other ``epoch_XXX`` folder, newest first."""
        folders = sorted((p for p in self.dir.glob("epoch_*") if p.is_dir()),
                         key=lambda p: p.name, reverse=True)
        pointed = self.latest()
        if pointed is not None and pointed in folders:
            folders.remove(pointed)
            folders.insert(0, pointed)
        return folders

    def resume_point(self, allow_inexact: bool = False) -> ResumePoint:
        """The checkpoint a resume starts from: the first whole one of :meth:`candidates`
        (exact). When none is whole, the first whose only fault is its random states if
        ``allow_inexact``; otherwise a :class:`CheckpointError` that names the files and says what
        to do. No checkpoint at all: ``ResumePoint(None)`` (the run starts again).

        Every process reaches the same answer: all of them read the same files.
        """
        acc = self.accelerator
        damaged: list[tuple[Path, str, bool]] = []  # (folder, its problems, only random states)
        for path in self.candidates():
            state, random = checkpoint_problems(path, acc.num_processes, acc.scaler is not None)
            if not state and not random:
                return ResumePoint(path, [f"{p.name} ({why})" for p, why, _ in damaged])
            damaged.append((path, "; ".join(state + random), not state))
        if not damaged:
            return ResumePoint(None)
        usable = [i for i, (_, _, random_only) in enumerate(damaged) if random_only]
        if usable and allow_inexact:
            path, problems, _ = damaged[usable[0]]
            return ResumePoint(path, [f"{p.name} ({why})" for p, why, _ in damaged[:usable[0]]],
                               inexact=f"{path.name}: {problems}; the random states restart "
                                       "from the seed")
        if usable:
            path, problems, _ = damaged[usable[0]]
            raise CheckpointError(
                f"cannot resume exactly from {path} ({problems}) and no kept checkpoint is whole; "
                "pass --resume-inexact to continue without its random states (recorded in "
                "metrics.jsonl)")
        listed = "; ".join(f"{p.name} ({why})" for p, why, _ in damaged)
        raise CheckpointError(f"no usable checkpoint in {self.dir}: {listed}; delete {self.dir} "
                              "and pass --resume to train the run again from epoch 0")

    def load(self, path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
        """Restore accelerate's state from ``path``; return the trainer's scalars and tensors."""
        path = Path(path)
        for name in (TRAINER_SCALARS, TRAINER_TENSORS):
            if not (path / name).is_file():
                raise CheckpointError(f"incomplete checkpoint {path}: {name} is missing")
        try:
            self.accelerator.load_state(str(path))
        except Exception as e:  # noqa: BLE001 - e.g. a model that does not fit: one line
            raise CheckpointError(f"cannot load checkpoint {path}: {_first_line(e)}") from None
        scalars = json.loads((path / TRAINER_SCALARS).read_text())
        tensors = read_safetensors(path / TRAINER_TENSORS)
        return scalars, tensors
