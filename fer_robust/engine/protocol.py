"""Evaluation protocols: where model selection happens, written into every result.

Two protocols (``data.protocol``):

- ``validation`` (default): a validation split (the benchmark's own, or a seeded stratified carve of
  ``data.val_fraction`` of the training split where the benchmark has none) selects the best epoch;
  ``best_model.safetensors`` is that epoch's weights. The test split is never read in training.
- ``full_train``: the papers' protocol. DR-FER and ARM train on the whole training split and report
  the test split. There is no validation split and no selection: the last epoch is kept
  (``last_model.safetensors``), and the test split is still never read in training. Reported test
  figures are then last-epoch figures, not tuned on anything.

:func:`selection_record` gives the fields every result file carries, so a number read out of context
still says how its model was chosen. :func:`protocol_choices` spells out every choice a figure
depends on besides the method (the classes, where each split comes from and so which one is the
test, the epoch kept, the seeds, the label noise): a training run prints them as its first line
(:func:`protocol_line`) and writes them at the top of its ``config.yaml``
(:func:`protocol_comment`), so a run can be checked against a paper's protocol at a glance.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from fer_robust.data.dataset_facts import DATASET_SPECS

if TYPE_CHECKING:
    from fer_robust.config import Config

__all__ = ["PROTOCOLS", "has_validation", "selection_record", "protocol_choices", "protocol_line",
           "protocol_comment"]

#: ``data.protocol`` values and what each means, for messages and reports.
PROTOCOLS: dict[str, str] = {
    "validation": "best epoch chosen by validation accuracy; the test split is never used for "
                  "selection",
    "full_train": "the whole training split, no validation split and no model selection: the last "
                  "epoch is kept; the test split is never used for selection",
}


def has_validation(protocol: str) -> bool:
    """Whether runs under ``protocol`` have a validation split (and select a best epoch)."""
    return protocol == "validation"


def selection_record(protocol: str, run_dir: str | Path | None = None) -> dict:
    """``{"protocol", "model_selection"}`` for result files. With ``run_dir``, the selection names
    the chosen epoch (from ``best.json``) under the validation protocol."""
    if not has_validation(protocol):
        return {"protocol": protocol,
                "model_selection": "none: last epoch kept (no validation split); the test split "
                                   "was never used for selection"}
    chosen = "best validation accuracy"
    best_file = Path(run_dir) / "best.json" if run_dir is not None else None
    if best_file is not None and best_file.is_file():
        best = json.loads(best_file.read_text())
        chosen += f" (epoch {best.get('epoch')})"
    return {"protocol": protocol,
            "model_selection": f"{chosen}; the test split was never used for selection"}


# Where the splits of a dataset without a spec (``folder``) come from.
_FOLDER_SOURCES = {"train": "train/ minus the carved val", "val": "val/, or carved from train/",
                   "test": "test/"}


def _noise_choice(cfg: "Config") -> str:
    noise = cfg.data.noise
    if noise.type == "none":
        return "none (the dataset's labels)"
    if noise.type == "file":
        from fer_robust.data.noise_file import resolve_noise_file
        digest = hashlib.sha256(resolve_noise_file(cfg.data).read_bytes()).hexdigest()
        return f"file {noise.file} (sha256 {digest[:16]})"
    rate = "" if noise.type == "annotator" else f" {noise.rate:g}"
    return f"{noise.type}{rate}, drawn with seed {noise.seed}"


def protocol_choices(cfg: "Config", classes: Sequence[str]) -> dict[str, str]:
    """Every protocol choice of a run, as ``{choice: what it is}``: the dataset and its classes,
    the source of each split (the test split is what figures are reported on), which epoch's model
    is kept, the seeds and the label noise."""
    data = cfg.data
    spec = DATASET_SPECS.get(data.name)
    sources = dict(spec.split_sources) if spec is not None else dict(_FOLDER_SOURCES)
    carved = "val" in (spec.carved_splits if spec is not None else ("val",))
    if not has_validation(data.protocol):
        sources["val"] = "none"
        if carved:
            sources["train"] = "the whole training split (no validation carve)"
    elif carved:
        sources["val"] += f" ({data.val_fraction:g} of each class, split_seed {data.split_seed})"
    if data.train_fraction < 1.0:
        sources["train"] += (f", a {data.train_fraction:g} share of each class (split_seed "
                             f"{data.split_seed})")
    kept = ("the best epoch by validation accuracy" if has_validation(data.protocol)
            else "the last epoch, no selection")
    return {"dataset": data.name,
            "classes": f"{len(classes)} ({', '.join(classes)})",
            "train": sources["train"], "val": sources["val"], "test": sources["test"],
            "kept": f"{kept} (data.protocol={data.protocol})",
            "seeds": f"seed {cfg.seed}, data.split_seed {data.split_seed}, "
                     f"data.noise.seed {data.noise.seed}",
            "noise": _noise_choice(cfg)}


def protocol_line(choices: dict[str, str]) -> str:
    """The first line a training run prints: every choice of :func:`protocol_choices`."""
    return "protocol: " + "; ".join(f"{k} {v}" for k, v in choices.items())


def protocol_comment(choices: dict[str, str]) -> str:
    """The choices as YAML comment lines, for the top of the run's ``config.yaml`` (comments, so
    the file still loads as the config it is)."""
    lines = ["# The run's protocol (written by tools/train.py; not read back):"]
    # One line per choice, whatever a value holds (a path may hold a line break).
    lines += [f"#   {k}: {' '.join(str(v).splitlines())}" for k, v in choices.items()]
    return "\n".join(lines) + "\n"
