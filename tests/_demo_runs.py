"""Short trainings on the built-in demo faces, and comparing their metrics epoch by epoch."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "configs" / "demo.yaml")
# Small and quick: a tiny demo set at 48 px.
FAST = ["data.img_size=48", "data.demo_train_per_class=24", "data.demo_val_per_class=8",
        "data.demo_test_per_class=8", "optim.batch_size=32", "optim.eval_batch_size=64",
        "progress_bar=false"]


def read_metrics(run: Path) -> list[dict]:
    """The records of a run's ``metrics.jsonl``, one per epoch."""
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_epochs(records: list[dict], reference: list[dict]) -> None:
    """``records`` replay the reference run's epochs: every field equal (floats to 1e-4), timing
    aside."""
    assert [r["epoch"] for r in records] == [r["epoch"] for r in reference]
    for a, b in zip(reference, records):
        for key, value in a.items():
            if key == "epoch_seconds":
                continue
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-4, abs=1e-5), (a["epoch"], key)
            else:
                assert b[key] == value, (a["epoch"], key)
