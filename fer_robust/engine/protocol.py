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
still says how its model was chosen.
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["PROTOCOLS", "has_validation", "selection_record", "protocol_banner"]

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


def protocol_banner(protocol: str) -> str:
    """The line a training run prints first about its protocol."""
    return f"protocol {protocol}: {PROTOCOLS[protocol]}"
