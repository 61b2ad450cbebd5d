"""Reading a run's ``metrics.jsonl`` and comparing two runs epoch by epoch (resume tests)."""
import json
from pathlib import Path

import pytest


def read_records(run: Path) -> list[dict]:
    """The run's ``metrics.jsonl``, one dict per epoch."""
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def assert_same_records(expected: list[dict], actual: list[dict]) -> None:
    """Every logged value of every epoch is the same (floats to 1e-4), wall times aside."""
    assert len(expected) == len(actual)
    for a, b in zip(expected, actual):
        for key, value in a.items():
            if key == "epoch_seconds":
                continue
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (a["epoch"], key)
            else:
                assert b[key] == value, (a["epoch"], key)
