"""Loading a trained model back from a run directory or a checkpoint, for the tools."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from fer_robust.config import Config
from fer_robust.engine.checkpoint import CheckpointError, latest_checkpoint, load_model_weights
from fer_robust.models.factory import build_model
from fer_robust.validation import load_config

__all__ = ["resolve_checkpoint", "load_trained_model", "checkpoint_of_weights"]


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path]:
    """``(run_dir, weights_file)`` for a run directory (its best model), a checkpoint folder
    (``checkpoints/epoch_XXX``) or a ``.safetensors`` weights file inside a run."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.is_dir() and (path / "config.yaml").is_file():
        for name in ("best_model.safetensors", "last_model.safetensors"):
            if (path / name).is_file():
                return path, path / name
        raise CheckpointError(f"{path} holds no best_model.safetensors (did training finish an epoch?)")
    if path.is_dir() and (path / "model.safetensors").is_file():
        return path.parent.parent, path / "model.safetensors"
    if path.is_file() and path.suffix == ".safetensors":
        for run_dir in (path.parent, path.parent.parent.parent):
            if (run_dir / "config.yaml").is_file():
                return run_dir, path
        raise CheckpointError(f"no config.yaml found beside {path} or its run directory")
    raise CheckpointError(f"{path} is neither a run directory, a checkpoint folder nor a "
                          ".safetensors file")


def checkpoint_of_weights(run_dir: Path, weights: Path) -> Path | None:
    """The checkpoint folder saved with the same model as ``weights`` (so its trainer state, e.g.
    the loss history, is the one that went with that model), or None when the run no longer keeps
    it: a checkpoint's own ``model.safetensors``; for ``last_model.safetensors`` the latest
    checkpoint (the last epoch is always checkpointed); for ``best_model.safetensors`` the
    checkpoint of the best epoch (``best.json``), if it was not pruned."""
    weights = Path(weights)
    if weights.name == "model.safetensors":
        folder: Path | None = weights.parent
    elif weights.name == "last_model.safetensors":
        folder = latest_checkpoint(run_dir)
    elif weights.name == "best_model.safetensors" and (run_dir / "best.json").is_file():
        epoch = json.loads((run_dir / "best.json").read_text())["epoch"]
        folder = run_dir / "checkpoints" / f"epoch_{epoch:03d}"
    else:
        folder = None
    if folder is None or not (folder / "trainer_state.safetensors").is_file():
        return None
    return folder


def load_trained_model(path: str | Path, overrides: list[str] | None = None
                       ) -> tuple[Config, torch.nn.Module, list[str], Path]:
    """Build the model from the run's saved config and load its weights (eval mode).

    Returns ``(config, model, class_names, run_dir)``.
    """
    run_dir, weights = resolve_checkpoint(path)
    # The trained weights replace any pretrained ones: never fetch or read those again (the file
    # training started from may be gone by now).
    cfg = load_config(run_dir / "config.yaml",
                      ["model.pretrained=false", "model.pretrained_file=none", *(overrides or [])])
    classes_file = run_dir / "classes.json"
    if not classes_file.is_file():
        raise CheckpointError(f"{classes_file} is missing")
    class_names = json.loads(classes_file.read_text())
    model = build_model(cfg.model, len(class_names), cfg.data.img_size)
    load_model_weights(model, weights)
    model.eval()
    return cfg, model, class_names, run_dir
