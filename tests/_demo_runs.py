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
# DR-FER's own robust decision, in place of the method's (configs/_method.yaml, which demo.yaml
# starts from): per-class GMM on cross-entropy losses, the retrieval soft label alone, the model's
# own pass, no mixup, no noise gate. For tests of the decision's mechanics on the paper's terms.
DR_FER_DECISION = ["robust.split.scope=class", "robust.split.loss=ce",
                   "robust.relabel.mix_given=false", "robust.relabel.model_weight=0",
                   "robust.relabel.given_floor=0", "robust.loss_normalization=group",
                   "robust.pass_hflip=false", "robust.teacher_ema=0", "robust.mixup_alpha=0",
                   "robust.noise_gate.threshold=0"]


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
