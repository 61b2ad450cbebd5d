"""tools/train.py, tools/test.py and tools/predict.py end to end on the built-in demo data."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fer_robust.cli import predict as predict_cli
from fer_robust.cli import test as test_cli
from fer_robust.cli import train as train_cli

from _demo_runs import DEMO, FAST, ROOT, assert_same_epochs, read_metrics


def two_stage(epochs=(1, 1)):
    return [f"stages.0.epochs={epochs[0]}", f"stages.1.epochs={epochs[1]}", "stages.2.epochs=0"]


def run_tool(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1",
                               "PYTHONPATH": str(ROOT)}, timeout=600)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "demo"
    train_cli.main(["--config", DEMO, *FAST, *two_stage(), f"output_dir={run}"])
    return run


def test_two_epoch_run_writes_every_file(demo_run):
    for name in ("config.yaml", "classes.json", "metrics.jsonl", "best_model.safetensors",
                 "best.json", "last_model.safetensors", "checkpoints/latest"):
        assert (demo_run / name).is_file(), name
    records = [json.loads(x) for x in (demo_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1]
    for r in records:
        assert {"loss", "lr", "val_accuracy", "epoch_seconds", "stage"} <= set(r)
    latest = (demo_run / "checkpoints/latest").read_text().strip()
    assert (demo_run / "checkpoints" / latest / "trainer_state.safetensors").is_file()
    assert (demo_run / "samples" / "epoch_001.npz").is_file()  # the self-paced epoch's split


def test_test_tool_reproduces_recorded_val_accuracy(demo_run, tmp_path):
    best = json.loads((demo_run / "best.json").read_text())
    out = tmp_path / "val.json"
    result = test_cli.main(["--checkpoint", str(demo_run), "--split", "val", "--out", str(out),
                            "--batch-size", "7"])
    assert result["accuracy"] == pytest.approx(best["val_accuracy"], abs=1e-9)
    saved = json.loads(out.read_text())
    for key in ("accuracy", "mean_class_accuracy", "macro_f1", "num_samples", "per_class_accuracy",
                "confusion_matrix"):
        assert key in saved
    assert out.with_suffix(".png").stat().st_size > 1000
    assert np.asarray(saved["confusion_matrix"]).sum() == saved["num_samples"] == 56


def test_test_tool_result_does_not_depend_on_batch_size(demo_run, tmp_path):
    a = test_cli.main(["--checkpoint", str(demo_run), "--split", "test", "--batch-size", "1",
                       "--out", str(tmp_path / "a.json"), "--tta", "hflip"])
    b = test_cli.main(["--checkpoint", str(demo_run), "--split", "test", "--batch-size", "64",
                       "--out", str(tmp_path / "b.json"), "--tta", "hflip"])
    assert a["confusion_matrix"] == b["confusion_matrix"]


def test_predict_tool_on_a_folder(demo_run, tmp_path):
    from fer_robust.data.demo import save_demo_as_image_folder
    save_demo_as_image_folder(tmp_path / "faces", per_class=2, img_size=48)
    rows = predict_cli.main(["--checkpoint", str(demo_run), "--no-detect", str(tmp_path / "faces"),
                             "--out", str(tmp_path / "pred.csv")])
    assert len(rows) == len(list((tmp_path / "faces").rglob("*.png")))
    probs = np.array([[v for k, v in r.items() if k.startswith("p_")] for r in rows])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert (tmp_path / "pred.csv").read_text().count("\n") == len(rows) + 1


def test_resume_matches_an_uninterrupted_run(tmp_path, capsys):
    common = ["--config", DEMO, *FAST, "stages.0.epochs=1", "stages.1.epochs=1", "stages.2.epochs=1",
              "data.sampler=mrr",
              "data.noise.type=symmetric", "data.noise.rate=0.3",
              # The robust epochs' pass reads a moving average of the weights, which the
              # checkpoints carry: the resumed run must continue it, not restart it; and the
              # robust epochs mix their batches, with weights the resumed run must draw again.
              "robust.teacher_ema=0.9", "robust.mixup_alpha=1.0"]
    train_cli.main([*common, f"output_dir={tmp_path / 'full'}"])
    train_cli.main([*common, f"output_dir={tmp_path / 'cut'}", "--stop-after-epoch", "1"])
    assert len((tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()) == 2
    train_cli.main(["--resume", str(tmp_path / "cut")])
    full, cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert len(full) == 3
    assert_same_epochs(cut, full)
    # The noise gate's reading is the first robust pass's (epoch 1), carried across the cut: a
    # resumed run that lost it would read epoch 2's pass instead.
    from fer_robust.engine.checkpoint import load_trainer_tensors
    for run in ("full", "cut"):
        gate = load_trainer_tensors(tmp_path / run / "checkpoints" / "epoch_002", "noise_gate.")
        assert float(gate["first_estimate"]) == pytest.approx(full[1]["noise_rate_estimate"])
    assert full[2]["noise_rate_estimate"] != pytest.approx(full[1]["noise_rate_estimate"])
    # The newest two checkpoints and the end of the first stage (keep_stage_checkpoints), from
    # which a later stage can be trained again.
    kept = sorted(p.name for p in (tmp_path / "full" / "checkpoints").glob("epoch_*"))
    assert kept == ["epoch_000", "epoch_001", "epoch_002"]

    # A branch from the end of the warm-up with the same settings replays the rest of the run;
    # one that changes what the warm-up read is refused and writes nothing.
    warmup_end = str(tmp_path / "full" / "checkpoints" / "epoch_000")
    train_cli.main([*common, f"output_dir={tmp_path / 'branch'}", "--branch-from", warmup_end])
    assert_same_epochs(read_metrics(tmp_path / "branch"), full)
    record = json.loads((tmp_path / "branch" / "branched_from.json").read_text())
    assert record["epoch"] == 0 and record["differs_in"] == ["output_dir"]
    with pytest.raises(SystemExit):
        train_cli.main([*common, "optim.lr=0.01", "robust.relabel.min_confidence=0.5",
                        f"output_dir={tmp_path / 'refused'}", "--branch-from", warmup_end])
    assert "['optim.lr']" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()


@pytest.fixture
def mix_weights(monkeypatch):
    """The mixing weight of every batch the trainer mixes, in order."""
    import fer_robust.engine.trainer as trainer_module

    weights = []
    mix = trainer_module.mix_images

    def recording_mix(images, lam):
        weights.append(lam)
        return mix(images, lam)

    monkeypatch.setattr(trainer_module, "mix_images", recording_mix)
    return weights


def test_mixup_mixes_the_robust_epochs_batches_only(tmp_path, mix_weights):
    """``robust.mixup_alpha``: every batch of a robust epoch is mixed, no warm-up batch is, and
    the warm-up trains exactly as without it."""
    weights = mix_weights
    common = ["--config", DEMO, *FAST, *two_stage((1, 1))]
    train_cli.main([*common, "robust.mixup_alpha=1.0", f"output_dir={tmp_path / 'mixed'}"])
    mixed = read_metrics(tmp_path / "mixed")
    batches_per_epoch = len(weights)
    assert batches_per_epoch > 0 and all(0.5 <= w <= 1.0 for w in weights)
    weights.clear()
    train_cli.main([*common, "robust.mixup_alpha=0", f"output_dir={tmp_path / 'plain'}"])
    assert weights == []
    plain = read_metrics(tmp_path / "plain")
    assert_same_epochs(mixed[:1], plain[:1])
    assert mixed[1]["loss"] != pytest.approx(plain[1]["loss"], rel=1e-3)


def test_labels_taken_as_clean_train_unmixed(tmp_path, mix_weights):
    """``robust.noise_gate.keep_mixup``: once the gate takes the labels as clean, the robust
    batches are not mixed, and the run trains exactly as one without mixup; kept, they are."""
    weights = mix_weights
    common = ["--config", DEMO, *FAST, *two_stage((1, 1)), "robust.noise_gate.threshold=0.99"]
    train_cli.main([*common, "robust.mixup_alpha=1.0", f"output_dir={tmp_path / 'gated'}"])
    assert weights == []
    gated = read_metrics(tmp_path / "gated")
    assert gated[1]["labels_taken_as_clean"]
    train_cli.main([*common, f"output_dir={tmp_path / 'unmixed'}"])
    assert_same_epochs(gated, read_metrics(tmp_path / "unmixed"))
    train_cli.main([*common, "robust.mixup_alpha=1.0", "robust.noise_gate.keep_mixup=true",
                    f"output_dir={tmp_path / 'kept'}"])
    assert len(weights) > 0


def test_config_typo_is_a_clear_error_and_writes_nothing(tmp_path):
    res = run_tool("tools/train.py", "--config", DEMO, "optim.lrr=0.1", f"output_dir={tmp_path}/x")
    assert res.returncode == 2
    assert "unknown config key 'optim.lrr'" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "x").exists()


def test_existing_run_is_not_overwritten(demo_run):
    before = (demo_run / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", DEMO, *FAST, f"output_dir={demo_run}"])
    assert exc.value.code == 2
    assert (demo_run / "metrics.jsonl").read_text() == before


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    res = run_tool("tools/test.py", "--checkpoint", str(tmp_path / "nope"))
    assert res.returncode == 2 and "checkpoint not found" in res.stderr


def test_dataset_root_without_expected_files_is_a_clear_error(tmp_path):
    res = run_tool("tools/train.py", "--config", str(ROOT / "configs/ferplus_cpu.yaml"),
                   f"data.root={tmp_path}", f"output_dir={tmp_path}/run")
    assert res.returncode == 2
    assert "FER2013Train" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_processes_train_like_one_and_evaluate_identically(tmp_path):
    """accelerate launch with 2 CPU processes: same schedule and comparable metrics as 1 process
    (per-process batch halved so the global batch matches; BatchNorm statistics are per process,
    so training is close, not bit-identical), and identical evaluation of one checkpoint."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = ["--config", DEMO, *FAST, *two_stage((2, 1)), "data.demo_train_per_class=40"]
    one = subprocess.run([sys.executable, "tools/train.py", *args, "optim.batch_size=32",
                          f"output_dir={tmp_path / 'one'}", "--cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert one.returncode == 0, one.stderr[-3000:]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    two = subprocess.run([*launch, "tools/train.py", *args, "optim.batch_size=16",
                          f"output_dir={tmp_path / 'two'}", "--cpu"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert two.returncode == 0, two.stderr[-3000:]
    rec1 = [json.loads(x) for x in (tmp_path / "one/metrics.jsonl").read_text().splitlines()]
    rec2 = [json.loads(x) for x in (tmp_path / "two/metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rec1] == [r["epoch"] for r in rec2] == [0, 1, 2]
    assert [r["stage"] for r in rec1] == [r["stage"] for r in rec2]
    for a, b in zip(rec1, rec2):
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-6)  # same number of optimiser updates
    assert abs(rec1[-1]["val_accuracy"] - rec2[-1]["val_accuracy"]) <= 0.15
    assert abs(rec1[-1]["loss"] - rec2[-1]["loss"]) <= 0.25 * rec1[-1]["loss"]
    # One checkpoint, evaluated by 1 and by 2 processes: identical results.
    ev1 = subprocess.run([sys.executable, "tools/test.py", "--checkpoint", str(tmp_path / "one"),
                          "--split", "val", "--out", str(tmp_path / "ev1.json"), "--cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    ev2 = subprocess.run([*launch, "tools/test.py", "--checkpoint", str(tmp_path / "one"),
                          "--split", "val", "--out", str(tmp_path / "ev2.json"), "--cpu"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert ev1.returncode == 0 and ev2.returncode == 0, ev2.stderr[-3000:]
    r1, r2 = (json.loads((tmp_path / f).read_text()) for f in ("ev1.json", "ev2.json"))
    assert r1["confusion_matrix"] == r2["confusion_matrix"] and r1["num_samples"] == r2["num_samples"]


def test_non_finite_loss_stops_naming_epoch_step_and_term(tmp_path, monkeypatch, capsys):
    import torch

    from fer_robust.engine.trainer import Trainer

    real = Trainer.compute_losses

    def poisoned(self, *args, **kwargs):
        terms = real(self, *args, **kwargs)
        terms["mim"] = terms["mim"] * torch.tensor(float("nan"))
        return terms

    monkeypatch.setattr(Trainer, "compute_losses", poisoned)
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["--config", DEMO, *FAST, *two_stage(), f"output_dir={tmp_path / 'nan'}"])
    assert exc.value.code == 2
    assert "non-finite loss at epoch 0, step 0: term 'mim'" in capsys.readouterr().err
