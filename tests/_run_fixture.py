"""A run directory as training leaves it, in about a second and without training."""
from __future__ import annotations

from pathlib import Path

import torch

from fer_robust.config_io import save_config
from fer_robust.data.demo import DEMO_CLASSES
from fer_robust.engine.checkpoint import save_model_weights
from fer_robust.models.arm import AmendRepresentationModule
from fer_robust.models.factory import build_model
from fer_robust.utils import atomic_write_json
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
#: The demo recipe on a tiny backbone and a small demo set.
TINY = ["model.backbone=test_resnet", "data.img_size=48", "data.demo_train_per_class=8",
        "data.demo_val_per_class=6", "data.demo_test_per_class=4", "progress_bar=false"]


def make_run(run_dir: Path, overrides: list[str] = (), seed: int = 0) -> Path:
    """``config.yaml``, ``classes.json`` and ``best_model.safetensors`` of a demo run whose model
    is untrained but whose running statistics (BatchNorm's, ARM's running affinity) hold random,
    non-trivial values, so a graph that ignored them would give different outputs."""
    cfg = load_config(ROOT / "configs" / "demo.yaml", [*TINY, *overrides, f"output_dir={run_dir}"])
    torch.manual_seed(seed)
    model = build_model(cfg.model, len(DEMO_CLASSES), cfg.data.img_size)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
            if isinstance(module, AmendRepresentationModule):
                module.running_affinity.uniform_(-1.0, 1.0)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / "classes.json", list(DEMO_CLASSES))
    save_model_weights(model, run_dir / "best_model.safetensors")
    return run_dir
