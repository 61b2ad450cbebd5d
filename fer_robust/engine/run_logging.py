"""Per-epoch metrics: one JSON line per epoch (MAE's habit), optional TensorBoard, and the line
printed after each epoch."""
from __future__ import annotations

import json
from pathlib import Path

from fer_robust.utils import atomic_write_text, json_safe

__all__ = ["MetricsLog", "epoch_line"]


class MetricsLog:
    """Appends one JSON object per epoch to ``metrics.jsonl`` (main process only)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def append(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(json_safe(record)) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]

    def truncate_after(self, epoch: int) -> None:
        """Keep only epochs <= ``epoch`` (a resumed run re-does the later ones)."""
        if not self.enabled or not self.path.is_file():
            return
        keep = [r for r in self.read() if r.get("epoch", -1) <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))


def epoch_line(r: dict) -> str:
    """The line printed after each epoch, from its metrics record ``r``: the loss, the validation
    accuracy and what the robust stages decided (clean share, split F1, relabel accuracy, noise
    estimate)."""
    extra = ""
    if "clean_ratio" in r:
        extra = f" clean {r['clean_ratio']:.3f}"
    if "split_f1" in r:
        extra += f" split-F1 {r['split_f1']:.3f}"
    if "relabel_accuracy" in r:
        extra += f" relabel-acc {r['relabel_accuracy']:.3f}"
    if "noise_rate_estimate" in r:
        extra += f" noise-est {r['noise_rate_estimate']:.3f}"
        if r.get("labels_taken_as_clean"):
            extra += " (labels taken as clean)"
    val = f" val-acc {r['val_accuracy']:.4f}" if "val_accuracy" in r else ""
    return (f"epoch {r['epoch']:3d} [{r['stage']}] loss {r['loss']:.4f}"
            f"{val}{extra} ({r['epoch_seconds']:.1f}s)")
