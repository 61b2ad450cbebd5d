"""Branch a run: a new run that continues another from one of its checkpoints with other settings
for the epochs after it.

``tools/train.py --config C --branch-from RUN/checkpoints/epoch_XXX`` makes C's ``output_dir`` a
run directory that holds what RUN held up to epoch XXX (the checkpoint, the metrics lines, the
per-sample states, the noisy labels and, when it was chosen by then, the best model) with C as its
config, then resumes it: epochs 0..XXX are RUN's, the later ones train with C. The usual use is an
ablation of the robust stages from one shared warm-up (the checkpoint at the end of a stage is
kept for good, see ``keep_stage_checkpoints``).

So that the branch continues the same optimisation, C may differ from RUN's config only in what
the epochs up to XXX did not fix: the ``robust`` settings, the loss weights of the stages that
start after XXX, and the settings that never change what a run computes
(:data:`~fer_robust.config.RESULT_NEUTRAL_KEYS`). The data, model, optimiser and schedule, seed and
the stages' names, kinds and lengths must be equal; anything else is refused with the keys named.
``branched_from.json`` in the new run records the checkpoint and the keys that differ.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from fer_robust.config import (RESULT_NEUTRAL_KEYS, Config, ConfigError, config_to_dict,
                               flatten_config)
from fer_robust.config_io import save_config
from fer_robust.engine.checkpoint import TRAINER_SCALARS, checkpoint_problems
from fer_robust.engine.run_logging import MetricsLog
from fer_robust.utils import atomic_write_json, atomic_write_text
from fer_robust.validation import load_config

__all__ = ["BRANCH_RECORD", "BranchError", "BranchPlan", "branch_differences", "make_branch",
           "plan_branch"]

BRANCH_RECORD = "branched_from.json"
# Settings a branch may change: they are read only by the robust stages' epochs.
BRANCHABLE_PREFIXES = ("robust.",)


class BranchError(ConfigError):
    """A branch that cannot continue its source run as asked; the message names what differs."""


def branch_differences(source: Config, branch: Config, epoch: int) -> list[str]:
    """The dotted keys in which ``branch`` differs from ``source``, after refusing (BranchError)
    any difference that would change epochs 0..``epoch`` or the optimisation after them."""
    a, b = flatten_config(source), flatten_config(branch)
    a_stages, b_stages = a.pop("stages"), b.pop("stages")
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    refused = [k for k in differing
               if k not in RESULT_NEUTRAL_KEYS and not k.startswith(BRANCHABLE_PREFIXES)]
    if [(s["name"], s["kind"], s["epochs"]) for s in a_stages] != \
            [(s["name"], s["kind"], s["epochs"]) for s in b_stages]:
        refused.append("stages (names, kinds or lengths)")
    first = 0
    for i, (sa, sb) in enumerate(zip(a_stages, b_stages)):
        if sa["loss_weights"] != sb["loss_weights"]:
            (refused if first <= epoch else differing).append(f"stages.{i}.loss_weights")
        first += sa["epochs"]
    if refused:
        raise BranchError(f"a branch from epoch {epoch} may change only the robust settings and "
                          f"the loss weights of later stages; it differs in {refused}")
    return sorted(differing)


def _read_json(path: Path):
    return json.loads(path.read_text())


@dataclass
class BranchPlan:
    checkpoint: Path
    source: Path
    scalars: dict          # the checkpoint's trainer scalars (epoch, updates, best so far)
    source_cfg: Config
    differing: list[str]
    cfg: Config


def plan_branch(checkpoint: str | Path, cfg: Config) -> BranchPlan:
    """Check that ``cfg`` may continue ``checkpoint``'s run (see the module doc); reads only, so
    every process can call it and they all refuse alike."""
    checkpoint = Path(checkpoint)
    source = checkpoint.parent.parent
    if checkpoint.parent.name != "checkpoints" or not (source / "config.yaml").is_file():
        raise BranchError(f"--branch-from: {checkpoint} is not RUN/checkpoints/epoch_XXX of a run "
                          "(no config.yaml two folders up)")
    state, random = checkpoint_problems(checkpoint)
    if state or random:
        raise BranchError(f"--branch-from: {checkpoint} is not a whole checkpoint: "
                          f"{'; '.join(state + random)}")
    scalars = _read_json(checkpoint / TRAINER_SCALARS)
    source_cfg = load_config(source / "config.yaml")
    differing = branch_differences(source_cfg, cfg, int(scalars["epoch"]))
    run_dir = Path(cfg.output_dir)
    if run_dir.resolve() == source.resolve():
        raise BranchError("--branch-from: the branch needs its own output_dir, not the source "
                          "run's")
    if run_dir.exists() and any(run_dir.iterdir()):
        raise BranchError(f"{run_dir} is not empty; a branch starts in a new output_dir "
                          "(nothing was overwritten)")
    return BranchPlan(checkpoint, source, scalars, source_cfg, differing, cfg)


def make_branch(plan: BranchPlan) -> Path:
    """Write the branch's run directory (main process only); it is then resumed like any run."""
    checkpoint, source, epoch = plan.checkpoint, plan.source, int(plan.scalars["epoch"])
    run_dir = Path(plan.cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(checkpoint, run_dir / "checkpoints" / checkpoint.name)
    atomic_write_text(run_dir / "checkpoints" / "latest", checkpoint.name + "\n")
    for name in ("classes.json", "noisy_labels.npz"):
        if (source / name).is_file():
            shutil.copy2(source / name, run_dir / name)
    for npz in sorted((source / "samples").glob("epoch_*.npz")):
        if int(npz.stem.split("_")[1]) <= epoch:
            (run_dir / "samples").mkdir(exist_ok=True)
            shutil.copy2(npz, run_dir / "samples" / npz.name)
    shutil.copy2(source / "metrics.jsonl", run_dir / "metrics.jsonl")
    MetricsLog(run_dir / "metrics.jsonl").truncate_after(epoch)
    # The best model so far, when the source's best file is the one chosen by this epoch.
    best = source / "best.json"
    if best.is_file() and _read_json(best) == plan.scalars["best"]:
        shutil.copy2(source / "best_model.safetensors", run_dir / "best_model.safetensors")
        shutil.copy2(best, run_dir / "best.json")
    save_config(plan.cfg, run_dir / "config.yaml")
    atomic_write_json(run_dir / BRANCH_RECORD, {
        "checkpoint": str(checkpoint), "epoch": epoch, "differs_in": plan.differing,
        "source_config": config_to_dict(plan.source_cfg)})
    return run_dir
