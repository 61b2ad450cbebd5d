"""Per-epoch metrics: one JSON line per epoch (MAE's habit) and optional TensorBoard."""
from __future__ import annotations

import json
from pathlib import Path

from fer_robust.utils import atomic_write_text, json_safe

__all__ = ["MetricsLog"]


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
