"""Atomic checkpoints and model weight files.

A checkpoint is a folder ``checkpoints/epoch_XXX`` holding accelerate's state (model as safetensors,
optimizer, grad scaler and every process's RNG state) plus the trainer's own state: scalars in
``trainer_state.json`` and per-sample arrays and loss buffers in ``trainer_state.safetensors``.
It is written under a temporary name and renamed into place, and ``checkpoints/latest`` is
replaced in one rename afterwards, so a kill during a save leaves the previous checkpoint usable.
Nothing is loaded with pickle: weights are safetensors and accelerate loads the optimizer and RNG
files with ``weights_only=True``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

from fer_robust.utils import atomic_path, atomic_write_json, atomic_write_text

__all__ = ["CheckpointManager", "save_model_weights", "load_model_weights", "latest_checkpoint",
           "load_trainer_tensors", "CheckpointError"]


class CheckpointError(FileNotFoundError):
    """A checkpoint or run directory is missing or incomplete (names the path)."""


def save_model_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Model state dict as safetensors, written atomically."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})


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


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The folder ``checkpoints/latest`` points to, or None."""
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if path.is_dir() else None


def load_trainer_tensors(path: str | Path, prefix: str = "") -> dict[str, torch.Tensor]:
    """The trainer's tensors saved in checkpoint folder ``path`` (``trainer_state.safetensors``),
    those whose key starts with ``prefix``, with the prefix removed (e.g. ``"loss_history."``)."""
    file = Path(path) / "trainer_state.safetensors"
    if not file.is_file():
        raise CheckpointError(f"incomplete checkpoint {path}: trainer_state.safetensors is missing")
    return {k[len(prefix):]: v for k, v in load_file(str(file)).items() if k.startswith(prefix)}


class CheckpointManager:
    def __init__(self, run_dir: str | Path, accelerator: Accelerator, keep: int = 2):
        self.dir = Path(run_dir) / "checkpoints"
        self.accelerator = accelerator
        self.keep = keep

    def save(self, epoch: int, scalars: dict, tensors: dict[str, torch.Tensor]) -> Path:
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
                      str(tmp / "trainer_state.safetensors"))
            atomic_write_json(tmp / "trainer_state.json", scalars)
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
        for p in done[: max(len(done) - self.keep, 0)]:
            shutil.rmtree(p, ignore_errors=True)

    def latest(self) -> Path | None:
        return latest_checkpoint(self.dir.parent)

    def load(self, path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
        """Restore accelerate's state from ``path``; return the trainer's scalars and tensors."""
        path = Path(path)
        for name in ("trainer_state.json", "trainer_state.safetensors"):
            if not (path / name).is_file():
                raise CheckpointError(f"incomplete checkpoint {path}: {name} is missing")
        self.accelerator.load_state(str(path))
        scalars = json.loads((path / "trainer_state.json").read_text())
        tensors = load_file(str(path / "trainer_state.safetensors"))
        return scalars, tensors
