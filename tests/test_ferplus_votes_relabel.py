"""Annotator noise and the relabel tool's vote comparison, on a tiny FERPlus-format fixture."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
from _ferplus_fixture import write_ferplus_fixture

from fer_robust.cli import relabel as relabel_cli
from fer_robust.cli import train as train_cli
from fer_robust.validation import load_config
from fer_robust.data.registry import build_dataset
from fer_robust.robust.metrics import vote_figures

ROOT = Path(__file__).resolve().parents[1]


def test_annotator_noise_run_and_vote_comparison(tmp_path):
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 30, "FER2013Valid": 6})
    run = tmp_path / "run"
    train_cli.main(["--config", str(ROOT / "configs/demo.yaml"), "data.name=ferplus",
                    f"data.root={data}", "data.noise.type=annotator", "stages.0.epochs=2",
                    "stages.1.epochs=0", "stages.2.epochs=1", "progress_bar=false",
                    "optim.batch_size=32", "log_tensorboard=true", f"output_dir={run}"])
    noisy = np.load(run / "noisy_labels.npz")
    # One tagger's vote drawn in proportion to 7/3 counts: about 30% differ from the majority.
    assert 0.15 < noisy["changed_mask"].mean() < 0.45
    assert any((run / "tensorboard").rglob("events.out.tfevents*"))
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert "split_f1" in records[-1] and "relabel_accuracy" in records[-1]

    summary = relabel_cli.main(["--checkpoint", str(run), "--out", str(tmp_path / "rel")])
    votes = summary["votes_all"]
    changed = noisy["changed_mask"].mean()
    # Given one-hot vs (0.7, 0.3) votes: TV 0.3 where the given label is the majority, 0.7 where
    # it is the minority vote.
    assert votes["tv_given_to_votes"] == pytest.approx(0.3 + 0.4 * changed, abs=1e-6)
    assert votes["argmax_agreement_given_with_majority"] == pytest.approx(1 - changed, abs=1e-6)
    # The training targets' distance, recomputed by hand from the CSV: every row's soft label (the
    # one-hot given label for a clean image; no confidence floor, so every noisy one is relabelled).
    with open(tmp_path / "rel" / "relabel.csv") as fh:
        rows = list(csv.DictReader(fh))
    targets = np.array([[float(v) for k, v in r.items() if k.startswith("soft_")] for r in rows])
    counts = build_dataset(load_config(run / "config.yaml").data, "train").votes
    vote_dist = counts / counts.sum(1, keepdims=True)
    assert votes["tv_soft_to_votes"] == pytest.approx(
        0.5 * np.abs(targets - vote_dist).sum(1).mean(), abs=1e-3)
    assert summary["num_samples"] == 210


def test_vote_agreement_on_a_handmade_example():
    soft = np.array([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]], np.float32)
    given = np.array([0, 2])
    votes = np.array([[7, 3, 0], [0, 10, 0]], np.float32)
    out = vote_figures(soft, given, votes, majority_labels=np.array([0, 1]))
    # float32 soft labels against float64 vote shares: equal to ~1e-8
    assert out["tv_soft_to_votes"] == pytest.approx(0.0, abs=1e-7)
    assert out["tv_given_to_votes"] == pytest.approx((0.3 + 1.0) / 2)
    assert out["argmax_agreement_soft_with_majority"] == 1.0
    assert out["argmax_agreement_given_with_majority"] == 0.5
