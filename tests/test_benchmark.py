"""The noise benchmark: how its trainings are derived, its figures, and the command end to end."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _ferplus_fixture import write_ferplus_fixture

from fer_robust.noise_benchmark.recipe import (ABLATIONS, PEERS, RunSpec, applicable_ablations,
                                               build_run_config, ignored_by, plan_runs)
from fer_robust.noise_benchmark.comparison import compare
from fer_robust.noise_benchmark.report import render_markdown, summarize_run
from fer_robust.cli import benchmark as benchmark_cli
from fer_robust.config import ConfigError
from fer_robust.data.registry import train_subset
from fer_robust.data.base import FERDataset
from fer_robust.validation import load_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "benchmark_ferplus.yaml"
FERPLUS_CPU = ROOT / "configs" / "ferplus_cpu.yaml"


def run_config(setting, variant, size="full", overrides=()):
    return build_run_config(RECIPE, RunSpec(setting, variant), size, "/tmp/unused", list(overrides))


def test_baseline_differs_from_the_full_system_only_in_the_model_and_its_losses():
    full, base = run_config("sym30", "full"), run_config("sym30", "baseline")
    for section in ("data", "optim"):
        assert getattr(full, section) == getattr(base, section)
    assert (full.seed, full.model.backbone, full.model.pretrained) == \
        (base.seed, base.model.backbone, base.model.pretrained)
    assert sum(s.epochs for s in full.stages) == sum(s.epochs for s in base.stages) == 40
    assert (base.model.arch, base.model.pooling) == ("baseline", "avg")
    # Same backbone geometry: both see a 3x3 final map at 48 px.
    assert full.model.output_stride == base.model.output_stride == 16
    assert [(s.kind, s.loss_weights) for s in base.stages] == [("warmup", {"ce": 1.0})]
    assert {s.kind for s in full.stages if s.epochs} == {"warmup", "semi_supervised"}
    assert full.data.noise.type == "symmetric" and full.data.noise.rate == 0.3


def test_fingerprints_leave_out_later_keys_at_the_value_earlier_runs_had():
    """A setting added after results were recorded (``LATER_KEY_DEFAULTS``) does not change the
    fingerprint while it holds the value earlier runs had implicitly; any other value does."""
    from fer_robust.config import LATER_KEY_DEFAULTS

    full = run_config("sym30", "full")
    key = "robust.clean_loss_q"
    assert key in LATER_KEY_DEFAULTS and full.robust.clean_loss_q == LATER_KEY_DEFAULTS[key]
    relevant = benchmark_cli.result_relevant(full)
    assert key not in relevant and "robust.loss_normalization" in relevant
    bounded = run_config("sym30", "full", overrides=[f"{key}=0.7"])
    assert benchmark_cli.config_fingerprint(bounded) != benchmark_cli.config_fingerprint(full)
    assert benchmark_cli.result_relevant(bounded)[key] == 0.7


def test_a_run_directory_replaced_after_planning_is_refused_not_trained(tmp_path):
    from fer_robust.config_io import save_config

    cfg = run_config("sym30", "full")
    run_dir = tmp_path / "runs" / "sym30-full"
    run_dir.mkdir(parents=True)
    other = run_config("sym30", "full", overrides=["robust.teacher_ema=0.5"])
    save_config(other, run_dir / "config.yaml")
    with pytest.raises(ConfigError, match="robust.teacher_ema"):
        benchmark_cli.run_one(cfg, run_dir, cpu=True, accelerator_holder=[])
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.yaml"]


def test_a_table_only_run_unfinished_at_its_turn_is_left_out_not_trained(tmp_path, monkeypatch,
                                                                         capsys):
    """A run planned for the table alone (finished at planning, not requested) whose directory is
    unfinished when its turn comes, e.g. another process is training it, is not trained; one
    replaced by a finished run of another config is not summarised as this config's."""
    from fer_robust.config_io import save_config

    def refuse(*args, **kwargs):
        raise AssertionError("a run that was not requested was trained or summarised")

    monkeypatch.setattr(benchmark_cli, "run_one", refuse)
    monkeypatch.setattr(benchmark_cli, "summarize_finished", refuse)
    cfg = run_config("sym30", "full")
    (tmp_path / "runs" / "sym30-full").mkdir(parents=True)
    results = benchmark_cli.run_all(["sym30-full"], {"sym30-full": cfg}, tmp_path, header={},
                                    cpu=True, trainable=set())
    assert results == {}
    assert "sym30-full: listed for the table as finished" in capsys.readouterr().out

    replaced = tmp_path / "runs" / "sym30-full"
    save_config(run_config("sym30", "full", overrides=["robust.mixup_alpha=0.5"]),
                replaced / "config.yaml")
    (replaced / "final_fit.json").write_text("{}")
    results = benchmark_cli.run_all(["sym30-full"], {"sym30-full": cfg}, tmp_path, header={},
                                    cpu=True, trainable=set())
    assert results == {}
    assert "holds a run of another config now" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="robust.mixup_alpha"):  # a requested one: an error
        benchmark_cli.run_all(["sym30-full"], {"sym30-full": cfg}, tmp_path, header={}, cpu=True,
                              trainable={"sym30-full"})


def test_settings_and_sizes():
    assert run_config("clean", "full").data.noise.type == "none"
    assert run_config("annotator", "full").data.noise.type == "annotator"
    quick = run_config("sym30", "full", "quick")
    assert quick.data.train_fraction == 0.03 and run_config("sym30", "full").data.train_fraction == 0.15
    assert quick.optim.batch_size == 32
    # half of every stage's epochs; a stage with none keeps none
    assert [s.epochs for s in quick.stages] == [5, 0, 15]
    assert sum(s.epochs for s in run_config("sym30", "baseline", "quick").stages) == 20
    # user overrides reach every training
    assert run_config("clean", "baseline", overrides=["optim.lr=0.01"]).optim.lr == 0.01


def test_each_ablation_switches_off_exactly_its_part():
    full = run_config("sym30", "full")
    weights = lambda cfg: set().union(*(s.loss_weights for s in cfg.stages if s.epochs))  # noqa: E731
    kinds = lambda cfg: [s.kind for s in cfg.stages if s.epochs]  # noqa: E731
    # The mirrored-view consistency was measured and is off in the recipe (docs/method.md): its
    # ablation serves a recipe that turns it on, and refuses one that leaves it off.
    off_in_recipe = {"flip_consistency": ["robust.flip_consistency.weight=1.0"]}
    no = {a: run_config("sym30", f"no_{a}", overrides=off_in_recipe.get(a, ())) for a in ABLATIONS}
    for a in off_in_recipe:
        with pytest.raises(ConfigError, match="changes nothing"):
            run_config("sym30", f"no_{a}")
    assert no["flip_consistency"].robust.flip_consistency.weight == 0.0
    assert not no["mim"].model.mim.enabled and "mim" not in weights(no["mim"])
    assert no["arm"].model.pooling == "avg" and weights(no["arm"]) == weights(full)
    assert "dcl" not in weights(no["dcl"]) and kinds(no["dcl"]) == kinds(full)
    assert kinds(no["relabel"]) == ["warmup", "self_paced"] and "soft_ce" not in weights(no["relabel"])
    assert kinds(no["gmm"]) == ["warmup", "warmup"] and "soft_ce" not in weights(no["gmm"])
    local = no["local"]
    assert not local.model.local_branch and not local.model.mim.enabled
    assert not {"local_ce", "mim"} & weights(local) and kinds(local) == kinds(full)
    assert no["gate"].robust.noise_gate.threshold == 0.0 and weights(no["gate"]) == weights(full)
    assert no["gate"].model == full.model and kinds(no["gate"]) == kinds(full)
    retrieval = no["retrieval"]  # soft labels from the model alone; the rest as in the full system
    assert retrieval.robust.relabel.model_weight == 1.0 and weights(retrieval) == weights(full)
    assert retrieval.model == full.model
    for a, cfg in no.items():  # everything else stays as in the full system
        assert cfg.model.arch == "two_branch" and cfg.optim == full.optim and cfg.data == full.data
        assert a == "flip_consistency" or cfg.robust.flip_consistency == full.robust.flip_consistency
        assert a == "gate" or cfg.robust.noise_gate == full.robust.noise_gate


def test_ablation_all_trains_the_parts_the_recipe_has_on(tmp_path):
    # The recipe keeps the mirrored-view consistency off: `--ablation all` leaves it out rather
    # than refusing the whole command; a recipe that turns it on gets its ablation too.
    every = applicable_ablations(RECIPE, "full")
    assert "flip_consistency" not in every
    assert set(every) == set(ABLATIONS) - {"flip_consistency"}
    names, _, _ = benchmark_cli.plan_configs(
        benchmark_cli.parse_args(["--settings", "sym30", "--ablation", "all"]), tmp_path)
    assert {n for n in names if "-no_" in n} == {f"sym30-no_{a}" for a in every}
    assert "flip_consistency" in applicable_ablations(RECIPE, "full",
                                                      ["robust.flip_consistency.weight=1.0"])
    # ...and without a gate in the recipe there is no gate to switch off.
    assert "gate" not in applicable_ablations(RECIPE, "quick", ["robust.noise_gate.threshold=0"])


def test_unknown_settings_ablations_and_sizes_are_errors():
    with pytest.raises(ConfigError, match="unknown setting"):
        plan_runs(["sym40"], [])
    with pytest.raises(ConfigError, match="unknown ablation"):
        plan_runs(["clean"], ["mimm"])
    with pytest.raises(ConfigError, match="unknown size"):
        run_config("clean", "full", "huge")
    with pytest.raises(ConfigError, match="unknown config key"):
        run_config("clean", "full", overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="changes nothing"):
        run_config("clean", "no_arm", overrides=["model.pooling=avg"])
    assert [r.name for r in plan_runs(["sym30"], ["dcl"])] == ["sym30-baseline", "sym30-full",
                                                              "sym30-no_dcl"]
    # variant by variant: every baseline first
    assert [r.name for r in plan_runs(["sym30", "clean"], [], ["baseline", "full"])] == [
        "sym30-baseline", "clean-baseline", "sym30-full", "clean-full"]
    with pytest.raises(ConfigError, match="unknown variant"):
        plan_runs(["clean"], [], ["dividemix"])


def test_peers_are_the_baseline_with_only_the_method_changed():
    """``--variants scn eac gce``: runs named ``<setting>-<peer>``, each the baseline's training
    (same data, optimiser, schedule, epochs, backbone and geometry, seed) with the peer's method,
    network and loss weights; SCN relabels from the epoch the full system starts relabelling."""
    assert [r.name for r in plan_runs(["sym30", "clean"], [], ["scn", "eac", "gce"])] == [
        "sym30-scn", "clean-scn", "sym30-eac", "clean-eac", "sym30-gce", "clean-gce"]
    # the default stays the baseline and the full system
    assert [r.variant for r in plan_runs(["clean"], [])] == ["baseline", "full"]
    base = run_config("sym30", "baseline")
    expected = {"scn": ("scn", "scn", {"ce": 1.0, "rank_reg": 1.0}),
                "eac": ("eac", "baseline", {"ce": 1.0, "cam_consistency": 5.0}),
                "gce": ("gce", "baseline", {"gce": 1.0})}
    for peer, (method, arch, weights) in expected.items():
        cfg = run_config("sym30", peer)
        assert (cfg.method.name, cfg.model.arch) == (method, arch)
        assert [(s.kind, s.epochs, s.loss_weights) for s in cfg.stages] == [("warmup", 40, weights)]
        assert cfg.data == base.data and cfg.optim == base.optim and cfg.seed == base.seed
        assert (cfg.model.backbone, cfg.model.output_stride, cfg.model.pooling) == \
            (base.model.backbone, base.model.output_stride, base.model.pooling)
        assert cfg.method.name not in ignored_by(cfg)
        assert f"method.{method}." not in ignored_by(cfg) and "robust." in ignored_by(cfg)
    assert run_config("sym30", "scn").method.scn.relabel_from_epoch == 10
    assert run_config("sym30", "scn", "quick").method.scn.relabel_from_epoch == 5
    assert sum(s.epochs for s in run_config("sym30", "gce", "quick").stages) == 20
    assert set(PEERS) == {"scn", "eac", "gce"}
    # a baseline and the full system ignore every peer's settings
    assert {"method.scn.", "method.eac.", "method.gce."} <= set(ignored_by(base))
    full = run_config("sym30", "full")
    assert {"method.scn.", "method.eac.", "method.gce."} <= set(ignored_by(full))


def test_train_fraction_is_a_seeded_stratified_subset():
    targets = np.repeat(np.arange(5), [400, 200, 100, 20, 1])
    ds = FERDataset([f"c{i}" for i in range(5)], targets, [f"{i}.png" for i in range(len(targets))],
                    loader=lambda i: None)
    a, b = train_subset(ds, 0.25, seed=3), train_subset(ds, 0.25, seed=3)
    assert a.paths == b.paths
    assert np.bincount(a.targets).tolist() == [100, 50, 25, 5, 1]  # no class drops out
    assert train_subset(ds, 0.25, seed=4).paths != a.paths
    with pytest.raises(ConfigError, match="train_fraction"):
        load_config(None, ["data.train_fraction=0"])


def write_run(run_dir: Path, val_accs, kinds, seconds, state=None):
    run_dir.mkdir(parents=True)
    lines = [json.dumps({"epoch": e, "kind": k, "val_accuracy": a, "val_mean_class_accuracy": a,
                         "epoch_seconds": s}) for e, (a, k, s) in enumerate(zip(val_accs, kinds, seconds))]
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if state is not None:
        (run_dir / "samples").mkdir()
        np.savez(run_dir / "samples" / "epoch_001.npz", **state)


def test_summary_figures_on_a_handmade_run(tmp_path):
    # 6 samples, 3 classes; samples 0-2 had their labels changed.
    true = np.array([0, 1, 2, 0, 1, 2])
    given = np.array([1, 2, 0, 0, 1, 2])
    votes = np.array([[8, 2, 0], [0, 10, 0], [0, 0, 10], [10, 0, 0], [0, 10, 0], [0, 5, 5]], float)
    soft = np.zeros((6, 3), np.float32)
    soft[0] = [0.8, 0.2, 0.0]  # right, TV to votes 0
    soft[1] = [0.0, 0.0, 1.0]  # wrong (the given label), TV 1
    state = {"given_labels": given, "clean_prob": np.array([0.1, 0.2, 0.9, 0.8, 0.3, 0.9]),
             "clean_mask": np.array([0, 0, 1, 1, 0, 1], bool),
             "relabeled_mask": np.array([1, 1, 0, 0, 0, 0], bool), "soft_labels": soft}
    write_run(tmp_path / "run", [0.5, 0.6], ["warmup", "semi_supervised"], [10.0, 14.0], state)
    s = summarize_run(tmp_path / "run", given, true, votes, 3)
    assert s["val_accuracy"] == 0.6 and s["best_val_accuracy"] == 0.6
    assert s["seconds_per_epoch"] == 12.0 and s["seconds_per_robust_epoch"] == 14.0
    # predicted noisy: 0, 1, 4; truly changed: 0, 1, 2 -> precision 2/3, recall 2/3
    assert s["split_precision"] == pytest.approx(2 / 3) and s["split_recall"] == pytest.approx(2 / 3)
    assert s["relabel_top1"] == 0.5 and s["relabel_top1_changed"] == 0.5
    assert s["changed_relabeled_share"] == pytest.approx(2 / 3)
    assert s["relabel_precision"] == 1.0                      # both relabelled ones were changed
    assert s["tv_soft_to_votes"] == pytest.approx(0.5)        # (0 + 1) / 2
    assert s["tv_given_to_votes"] == pytest.approx((0.8 + 1.0) / 2)
    # all samples: targets = soft for 0, 1 and given one-hot elsewhere
    assert s["tv_targets_to_votes_all"] == pytest.approx((0 + 1 + 1 + 0 + 0 + 0.5) / 6)
    with pytest.raises(ConfigError, match="given labels differ"):
        summarize_run(tmp_path / "run", true, true, votes, 3)
    # clean setting (true == given): no split figures, relabelling judged against the given labels
    clean = summarize_run(tmp_path / "run", given, given, votes, 3)
    assert "split_f1" not in clean and clean["relabel_top1"] == 0.5


def test_scn_summary_reads_its_hard_relabelling(tmp_path):
    """SCN's figures come from the training labels of its last sample state: relabel precision
    (relabelled images whose given label was wrong) and relabel accuracy (whose new label is the
    true one)."""
    true = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    given = np.array([1, 2, 0, 0, 1, 2, 0, 1])    # 0, 1, 2 changed
    train = np.array([0, 0, 0, 1, 1, 2, 0, 1])    # relabelled: 0 (right), 1 (wrong), 3 (spoilt)
    state = {"given_labels": given, "train_labels": train,
             "clean_prob": np.full(8, np.nan, np.float32), "clean_mask": np.ones(8, bool),
             "relabeled_mask": np.zeros(8, bool), "soft_labels": np.zeros((8, 3), np.float32)}
    write_run(tmp_path / "run", [0.5, 0.6], ["warmup", "warmup"], [10.0, 10.0], state)
    s = summarize_run(tmp_path / "run", given, true, None, 3, method="scn")
    assert s["num_relabeled"] == 3
    assert s["relabel_precision"] == pytest.approx(2 / 3)     # 0 and 1 had wrong given labels
    assert s["relabel_top1"] == pytest.approx(1 / 3)          # only 0 got its true label
    assert s["relabel_top1_changed"] == pytest.approx(1 / 2)  # 0 of {0, 1}
    assert s["changed_relabeled_share"] == pytest.approx(2 / 3)
    assert s["train_label_accuracy"] == pytest.approx(5 / 8)  # 0, 4, 5, 6, 7
    assert "split_f1" not in s and s["seconds_per_robust_epoch"] is None
    md = render_markdown({"sym30-scn": s}, compare({"sym30-scn": s}), {})
    assert "| sym30 | scn | 60.00 |" in md and "| 3 | 66.67 | 33.33 (50.00) |" in md


def test_comparison_damage_recovered_and_targets():
    results = {
        "clean-baseline": {"val_accuracy": 0.80, "best_val_accuracy": 0.81, "seconds_per_epoch": 100.0},
        "clean-full": {"val_accuracy": 0.798, "seconds_per_epoch": 130.0},
        "sym30-baseline": {"val_accuracy": 0.70, "best_val_accuracy": 0.75, "seconds_per_epoch": 100.0},
        "sym30-full": {"val_accuracy": 0.78, "seconds_per_epoch": 170.0, "split_f1": 0.9,
                       "relabel_top1": 0.65, "tv_soft_to_votes": 0.3, "tv_given_to_votes": 0.4},
    }
    c = compare(results)
    sym = c["per_setting"]["sym30"]
    assert sym["damage"] == pytest.approx(0.10) and sym["damage_recovered"] == pytest.approx(0.8)
    assert sym["margin_over_baseline"] == pytest.approx(0.08)
    assert sym["margin_over_baseline_best"] == pytest.approx(0.03)
    met = {(t["setting"], t["measure"]): t["met"] for t in c["targets"]}
    # sym30: +8 over the baseline's last epoch (>= 7) and +3 over its best (>= 2)
    assert met[("sym30", "margin_over_baseline")] and met[("sym30", "margin_over_baseline_best")]
    assert met[("sym30", "split_f1")] and met[("sym30", "relabel_top1")] is False  # 65% < 75%
    assert met[("*", "epoch_time_ratio_mean")] is False  # 1.7x in the worst setting
    assert c["per_setting"]["clean"]["epoch_time_ratio_mean"] == pytest.approx(1.3)
    assert met[("annotator", "margin_over_baseline")] is None  # not trained
    # clean: -0.2 pts is within the -0.3 allowed
    assert met[("clean", "margin_over_baseline")] and met[("sym30", "tv_soft_below_given")]
    md = render_markdown(results, c, {"title": "t", "machine": "m"})
    assert "| sym30 | full | 78.00 |" in md and "**no**" in md
    assert "+8.00 pts" in md and "+3.00 pts" in md

    results["sym30-full"]["val_accuracy"] = 0.765  # +6.5 over the last epoch: short of +7,
    results["sym30-baseline"]["best_val_accuracy"] = 0.72  # +4.5 over the best epoch
    met = {(t["setting"], t["measure"]): t["met"] for t in compare(results)["targets"]}
    assert met[("sym30", "margin_over_baseline")] is False
    assert met[("sym30", "margin_over_baseline_best")]
    # noise that does not hurt the baseline: nothing to recover, said so
    results["sym30-baseline"]["val_accuracy"] = 0.85
    c = compare(results)
    assert c["per_setting"]["sym30"]["damage_recovered"] is None
    assert "n/a (no damage)" in render_markdown(results, c, {})
    # a full system that relabelled nothing (the noise gate took the labels as clean): no soft
    # label to compare with the votes, said so rather than "not measured"
    results["clean-full"].update(num_relabeled=0, tv_soft_to_votes=float("nan"),
                                 tv_given_to_votes=float("nan"))
    c = compare(results)
    assert {(t["setting"], t["measure"]): t["met"]
            for t in c["targets"]}[("clean", "tv_soft_below_given")] is None
    assert "n/a (nothing relabelled: the targets are the given labels)" in \
        render_markdown(results, c, {})
    # ablations: full minus full-without-the-part
    results["sym30-no_dcl"] = {"val_accuracy": 0.75, "seconds_per_epoch": 160.0}
    assert compare(results)["per_setting"]["sym30"]["ablation_contribution"]["dcl"] == \
        pytest.approx(0.015)


def test_comparison_with_the_peers():
    """The full system against each peer: its margin over the best peer (last epochs), strictly
    ahead under noise, not behind under clean labels."""
    results = {
        "clean-full": {"val_accuracy": 0.80, "seconds_per_epoch": 1.0},
        "clean-scn": {"val_accuracy": 0.80, "best_val_accuracy": 0.81, "seconds_per_epoch": 1.0},
        "sym30-full": {"val_accuracy": 0.70, "seconds_per_epoch": 1.0},
        "sym30-scn": {"val_accuracy": 0.66, "best_val_accuracy": 0.69, "seconds_per_epoch": 1.0},
        "sym30-gce": {"val_accuracy": 0.71, "best_val_accuracy": 0.72, "seconds_per_epoch": 1.0},
    }
    c = compare(results)
    sym = c["per_setting"]["sym30"]
    assert sym["peers"]["scn"]["full_minus_peer"] == pytest.approx(0.04)
    assert sym["margin_over_best_peer"] == pytest.approx(-0.01)       # GCE is ahead
    assert c["per_setting"]["clean"]["margin_over_best_peer"] == 0.0
    met = {(t["setting"], t["measure"]): t["met"] for t in c["targets"]}
    assert met[("sym30", "margin_over_best_peer")] is False
    assert met[("clean", "margin_over_best_peer")] is True           # level: not behind
    assert met[("annotator", "margin_over_best_peer")] is None       # not trained
    md = render_markdown(results, c, {})
    assert "## Full system against the peers" in md
    assert "| sym30 | 70.00 | gce | 71.00 | 72.00 | -1.00 |" in md
    assert "full − best peer val accuracy (last epochs) > +0.0 pts | -1.00 pts | **no** |" in md


def test_benchmark_command_end_to_end(tmp_path, capsys):
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 24, "FER2013Valid": 6, "FER2013Test": 6})
    out = tmp_path / "bench"
    argv = ["--settings", "clean", "sym30", "--out", str(out),
            "--data-root", str(data), "--cpu", "optim.batch_size=32", "data.num_workers=0",
            "model.backbone=resnet10t", "data.train_fraction=1.0", "stages.0.epochs=1",
            "stages.2.epochs=1"]
    result = benchmark_cli.main(argv)
    names = ["clean-baseline", "sym30-baseline", "clean-full", "sym30-full"]  # baselines first
    assert list(result["runs"]) == names
    saved = json.loads((out / "results.json").read_text())
    assert list(saved["runs"]) == names
    sym = saved["runs"]["sym30-full"]
    assert sym["noise_rate"] == pytest.approx(0.3, abs=0.02)
    assert sym["num_relabeled"] > 0 and sym["epochs"] == 2
    # The split's F1 at finding the changed labels, by hand from the run's files (noisy: clean
    # probability <= 0.5), and as training logged it for the same (last) decision.
    run = out / "runs" / "sym30-full"
    called = np.load(run / "samples" / "epoch_001.npz")["clean_prob"] <= 0.5
    changed = np.load(run / "noisy_labels.npz")["changed_mask"]
    f1 = 2 * (called & changed).sum() / (called.sum() + changed.sum())
    assert sym["split_f1"] == pytest.approx(f1)
    logged = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["split_f1"] == pytest.approx(sym["split_f1"])
    assert sym["test_accuracy"] is not None  # the fixture has a test split
    assert saved["runs"]["clean-full"]["relabel_top1"] is not None  # judged against the majority
    assert "split_f1" not in saved["runs"]["sym30-baseline"]
    # memorisation figures: the final eval-mode pass, and per epoch in metrics.jsonl
    base = saved["runs"]["sym30-baseline"]
    fit = json.loads((out / "runs" / "sym30-baseline" / "final_fit.json").read_text())
    assert base["memorised_share"] == fit["final_memorised_share"]
    assert base["train_accuracy_given"] == fit["final_train_accuracy_given"]
    assert saved["runs"]["clean-baseline"]["memorised_share"] is None  # no noise to memorise
    records = [json.loads(x) for x in
               (out / "runs" / "sym30-baseline" / "metrics.jsonl").read_text().splitlines()]
    assert all({"train_accuracy_given", "memorised_share"} <= set(r) for r in records)
    assert base["best_val_accuracy"] == max(r["val_accuracy"] for r in records)
    assert base["best_epoch"] in (0, 1)
    for setting in ("clean", "sym30"):
        assert (out / f"curves_{setting}.png").read_bytes()[:4] == b"\x89PNG"
    assert saved["per_setting"]["sym30"]["damage"] == pytest.approx(
        saved["runs"]["clean-baseline"]["val_accuracy"] - saved["runs"]["sym30-baseline"]["val_accuracy"])
    md = (out / "results.md").read_text()
    assert "| sym30 | full |" in md and "## Targets" in md
    for name in names:
        assert (out / "runs" / name / "config.yaml").is_file()

    # Again: nothing is retrained.
    weights = out / "runs" / "sym30-full" / "last_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    capsys.readouterr()
    again = benchmark_cli.main(argv)
    assert "sym30-full: finished earlier" in capsys.readouterr().out
    assert weights.stat().st_mtime_ns == mtime
    assert json.dumps(again["runs"], sort_keys=True) == json.dumps(result["runs"], sort_keys=True)

    # The light files of a finished run (no weights, no checkpoints) still count as finished.
    light = out / "runs" / "clean-baseline"
    shutil.rmtree(light / "checkpoints")
    (light / "last_model.safetensors").unlink()
    (light / "best_model.safetensors").unlink()
    capsys.readouterr()
    kept = benchmark_cli.main(argv)
    assert "clean-baseline: finished earlier" in capsys.readouterr().out
    assert kept["runs"]["clean-baseline"]["val_accuracy"] == result["runs"]["clean-baseline"]["val_accuracy"]

    # A training cut short after its first epoch continues from that checkpoint to the same figures.
    run = out / "runs" / "sym30-full"
    weights.unlink()
    (run / "final_fit.json").unlink()  # written only after the last epoch
    shutil.rmtree(run / "checkpoints" / "epoch_001")
    (run / "checkpoints" / "latest").write_text("epoch_000\n")
    resumed = benchmark_cli.main(argv)
    assert "sym30-full: training" in capsys.readouterr().out
    assert resumed["runs"]["sym30-full"]["val_accuracy"] == pytest.approx(sym["val_accuracy"])
    assert resumed["runs"]["sym30-full"]["split_f1"] == pytest.approx(sym["split_f1"])

    # Other settings for the same --out: a clear error, nothing overwritten.
    with pytest.raises(SystemExit) as e:
        benchmark_cli.main([*argv, "optim.lr=0.1"])
    assert e.value.code == 2
    assert "another config" in capsys.readouterr().err
    saved = json.loads((out / "results.json").read_text())["runs"]["sym30-full"]
    assert saved["val_accuracy"] == resumed["runs"]["sym30-full"]["val_accuracy"]
    # A change to the full system's own parts keeps the baselines (they never read it) and names
    # the full system's run.
    with pytest.raises(SystemExit):
        benchmark_cli.main([*argv, "model.mim.masked_fraction=0.3"])
    err = capsys.readouterr().err
    assert "clean-full was trained with another config" in err and "model.mim.masked_fraction" in err

    # An ablation trained later into the same --out joins the table of the earlier runs.
    ablation = benchmark_cli.main(["--settings", "sym30", "--ablation", "gmm",
                                   *argv[argv.index("--out"):]])
    assert set(ablation["runs"]) == {*names, "sym30-no_gmm"}
    assert "split_f1" not in ablation["runs"]["sym30-no_gmm"]  # no split without the GMM
    assert "gmm" in ablation["per_setting"]["sym30"]["ablation_contribution"]
    assert "NaN" not in (out / "results.json").read_text()  # strict JSON

    # A results file alone stands for its runs on another machine: with the run directories gone,
    # the runs whose config fingerprint matches are not trained again, keep their figures and
    # curves, and the table and plots are rebuilt from the file.
    recorded = tmp_path / "recorded.json"
    shutil.copy(out / "results.json", recorded)
    elsewhere = tmp_path / "elsewhere"
    capsys.readouterr()
    moved = benchmark_cli.main([*argv[:argv.index("--out")], "--out", str(elsewhere),
                                "--results-from", str(recorded), *argv[argv.index("--out") + 2:]])
    printed = capsys.readouterr().out
    assert all(f"{name}: finished earlier with this config" in printed for name in names)
    assert not (elsewhere / "runs").exists()
    assert set(moved["runs"]) == {*names, "sym30-no_gmm"}  # the recorded ablation joins too
    assert moved["runs"]["sym30-full"]["val_accuracy"] == saved["val_accuracy"]
    assert (elsewhere / "curves_sym30.png").read_bytes()[:4] == b"\x89PNG"
    # Another config for the full system: its runs train again, the baselines are kept.
    capsys.readouterr()
    retrained = benchmark_cli.main([*argv[:argv.index("--out")], "--out", str(tmp_path / "x"),
                                    "--results-from", str(recorded), "--settings", "clean",
                                    *argv[argv.index("--out") + 2:], "robust.relabel.k=5"])
    printed = capsys.readouterr().out
    assert "clean-baseline: finished earlier with this config" in printed
    assert "clean-full: training" in printed
    assert retrained["runs"]["clean-full"]["config_fingerprint"] != \
        json.loads(recorded.read_text())["runs"]["clean-full"]["config_fingerprint"]


def load_benchmark_script(name: str):
    """``benchmarks/<name>.py`` as a module (the folder is not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # ~25 s idle: trains a run, then scores four split settings on it
def test_split_choices_scores_each_setting_on_one_checkpoint(tmp_path, capsys):
    """benchmarks/split_choices.py: from one checkpoint of a noisy run, every split setting's
    figures, each the decision split_and_relabel makes on the same pass."""
    choices = load_benchmark_script("split_choices")
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 24, "FER2013Valid": 6})
    out = tmp_path / "bench"
    benchmark_cli.main(["--settings", "sym30", "--variants", "full", "--out", str(out),
                        "--data-root", str(data), "--cpu", "optim.batch_size=32",
                        "data.num_workers=0", "model.backbone=resnet10t", "data.train_fraction=1.0",
                        "stages.0.epochs=1", "stages.2.epochs=1"])
    checkpoint = out / "runs" / "sym30-full" / "checkpoints" / "epoch_000"
    result = choices.main([str(checkpoint), "--out", str(tmp_path)])
    assert set(result["settings"]) == set(choices.SPLITS)
    changed = np.load(out / "runs" / "sym30-full" / "noisy_labels.npz")["changed_mask"]
    assert result["given_right"] == pytest.approx(1 - changed.mean())
    for row in result["settings"].values():
        assert 0 <= row["targets_right"] <= 1 and len(row["clean_kept_per_class"]) == 8
        assert row["tv_targets_to_votes"] >= 0  # FERPlus votes
    saved = json.loads((tmp_path / "split_choices_sym30-full_epoch_000.json").read_text())
    assert saved["settings"]["cross-entropy"]["f1"] == result["settings"]["cross-entropy"]["f1"]

    # benchmarks/split_analysis.py on the same run's robust pass: the run's global split is a
    # threshold on the values it fits (a monotone mixture), so the best threshold bounds it.
    analysis = load_benchmark_script("split_analysis").main(
        [str(out / "runs" / "sym30-full"), "--epoch", "1", "--out", str(tmp_path)])
    state = np.load(out / "runs" / "sym30-full" / "samples" / "epoch_001.npz")
    assert analysis["noise_rate"] == pytest.approx(changed.mean())
    assert analysis["split_global"]["f1"] <= analysis["best_split_value_threshold_f1"] + 1e-9
    moved = state["given_labels"] != state["true_labels"]
    assert analysis["model_accuracy_on_changed_true_labels"] == pytest.approx(
        (state["pred"][moved] == state["true_labels"][moved]).mean())
    assert (tmp_path / "split_analysis_sym30-full_epoch_001.json").exists()
    # The noise gate's reading of that pass is the one the run itself logged at that epoch.
    logged = [json.loads(line) for line in
              (out / "runs" / "sym30-full" / "metrics.jsonl").read_text().splitlines()]
    gate = analysis["noise_gate"]
    assert gate["estimate"] == pytest.approx(
        next(r["noise_rate_estimate"] for r in logged if r["epoch"] == 1), abs=1e-6)
    assert gate["labels_taken_as_clean"] == (gate["estimate"] < gate["threshold"])
    renamed = load_benchmark_script("split_analysis").main(
        [str(out / "runs" / "sym30-full"), "--epoch", "1", "--out", str(tmp_path), "--name", "tiny"])
    assert renamed["noise_gate"] == gate
    assert (tmp_path / "split_analysis_tiny_epoch_001.json").exists()


def test_oracle_selection_trains_on_exactly_the_unchanged_labels(tmp_path):
    """benchmarks/oracle_selection.py: after the full system's warm-up the baseline trains on the
    samples whose given label is the true one, and no other."""
    oracle = load_benchmark_script("oracle_selection")
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 40, "FER2013Valid": 6})
    results = tmp_path / "oracle.json"
    report = oracle.main(["--settings", "sym30", "--out", str(tmp_path / "runs"), "--cpu",
                          "--results-file", str(results), f"data.root={data}",
                          "optim.batch_size=16", "data.num_workers=0", "stages.0.epochs=1",
                          "stages.2.epochs=1"])
    saved = json.loads(results.read_text())
    assert saved == json.loads(json.dumps(report))
    entry = saved["settings"]["sym30"]
    assert len(entry["val_accuracy_per_epoch"]) == 2          # 1 warm-up + 1 oracle epoch
    assert saved["warmup_epochs"] == 1                        # the full system's warm-up (stages.0)
    changed = np.load(tmp_path / "runs" / "sym30" / "noisy_labels.npz")["changed_mask"]
    assert entry["clean_ratio"] == pytest.approx(1 - changed.mean())
    assert 0 < changed.mean() < 1
    kinds = [json.loads(x)["kind"] for x in
             (tmp_path / "runs" / "sym30" / "metrics.jsonl").read_text().splitlines()]
    assert kinds == ["warmup", oracle.ORACLE_KIND]      # the oracle's own registered stage ran
    from fer_robust.engine.stages import STAGE_KINDS, SelfPacedStage
    # The oracle kind is registered only while the script trains: no later config can name it.
    assert oracle.ORACLE_KIND not in STAGE_KINDS and STAGE_KINDS["self_paced"] is SelfPacedStage
    with pytest.raises(ConfigError, match="stages.0.kind"):
        load_config(None, [f"stages.0.kind={oracle.ORACLE_KIND}"])


def test_benchmark_trains_the_peers_as_rows_of_the_same_table(tmp_path):
    """``tools/benchmark.py --variants scn eac gce`` trains ``<setting>-scn`` etc. through the
    same tools, and reports each with the baseline's figures plus SCN's relabelling."""
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 8, "FER2013Valid": 2, "FER2013Test": 2})
    out = tmp_path / "bench"
    result = benchmark_cli.main([
        "--settings", "sym30", "--variants", "scn", "eac", "gce", "--out", str(out),
        "--data-root", str(data), "--cpu", "optim.batch_size=32", "data.num_workers=0",
        "model.backbone=resnet10t", "data.train_fraction=1.0", "stages.0.epochs=1",
        "stages.2.epochs=1"])
    assert list(result["runs"]) == ["sym30-scn", "sym30-eac", "sym30-gce"]
    for name, run in result["runs"].items():
        assert run["epochs"] == 2 and run["test_accuracy"] is not None
        assert run["memorised_share"] is not None and run["seconds_per_epoch"] > 0
        assert load_config(out / "runs" / name / "config.yaml").method.name == name.split("-")[1]
    scn = result["runs"]["sym30-scn"]
    assert {"num_relabeled", "train_label_accuracy", "noise_rate"} <= set(scn)
    records = [json.loads(x) for x in
               (out / "runs" / "sym30-scn" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["num_relabeled"] == scn["num_relabeled"]
    assert "loss_rank_reg" in records[0] and "loss_cam_consistency" in json.loads(
        (out / "runs" / "sym30-eac" / "metrics.jsonl").read_text().splitlines()[0])
    md = (out / "results.md").read_text()
    assert "| sym30 | scn |" in md and "| sym30 | gce |" in md
    assert "NaN" not in (out / "results.json").read_text()


def test_a_seed_moves_the_subset_the_noise_and_the_weights_and_nothing_else():
    from fer_robust.config import flatten_config
    from fer_robust.noise_benchmark.recipe import SEEDED_KEYS

    for variant in ("full", "baseline", "eac"):
        first = flatten_config(build_run_config(RECIPE, RunSpec("sym30", variant), "full", "/tmp/a"))
        third = flatten_config(build_run_config(RECIPE, RunSpec("sym30", variant, 2), "full",
                                                "/tmp/a"))
        assert {k for k in first if first[k] != third[k]} == set(SEEDED_KEYS)
        assert all(third[k] == first[k] + 2 for k in SEEDED_KEYS)


def test_run_names_carry_the_seed_and_seed_zero_keeps_the_old_names():
    from fer_robust.noise_benchmark.recipe import parse_run_name

    assert RunSpec("sym30", "eac").name == "sym30-eac"
    assert RunSpec("sym30", "no_mim", 3).name == "sym30-no_mim-seed3"
    for spec in (RunSpec("clean", "full"), RunSpec("annotator", "no_arm", 12)):
        assert parse_run_name(spec.name) == spec
    for bad in ("sym30", "sym30-", "sym30-eac-seed", "sym30-eac-seed0", "sym30-eac-seedx"):
        with pytest.raises(KeyError):
            parse_run_name(bad)
    assert [s.name for s in plan_runs(["sym30"], [], ["full", "eac"], [0, 1])] == \
        ["sym30-full", "sym30-eac", "sym30-full-seed1", "sym30-eac-seed1"]
    with pytest.raises(ConfigError, match="seeds"):
        plan_runs(["sym30"], [], ["full"], [-1])


def test_over_seeds_the_tables_give_mean_sd_and_the_paired_difference():
    def run(acc):
        return {"val_accuracy": acc, "best_val_accuracy": acc, "seconds_per_epoch": 1.0}

    results = {"sym30-full": run(0.62), "sym30-eac": run(0.60), "sym30-full-seed1": run(0.64),
               "sym30-eac-seed1": run(0.65), "sym30-full-seed2": run(0.63),
               "sym30-eac-seed2": run(0.60), "sym30-gce-seed1": run(0.50)}
    comparison = compare(results)
    row = comparison["per_setting"]["sym30"]
    full, eac = row["models"]["full"], row["models"]["eac"]
    assert full["n_seeds"] == eac["n_seeds"] == 3
    assert full["val_accuracy_mean"] == pytest.approx(0.63)
    assert full["val_accuracy_std"] == pytest.approx(0.01)  # sample sd (ddof=1)
    assert row["models"]["gce"]["val_accuracy_std"] is None  # one seed
    paired = row["paired"]["eac"]
    assert paired["full_minus_by_seed"] == pytest.approx({0: 0.02, 1: -0.01, 2: 0.03})
    assert paired["min"] == pytest.approx(-0.01) and paired["mean"] == pytest.approx(0.04 / 3)
    assert row["paired"]["gce"]["n_seeds"] == 1  # paired only where both trained the seed
    targets = {(t["setting"], t["measure"]): t for t in comparison["targets"]}
    assert targets["sym30", "paired_min:eac"]["met"] is False  # behind EAC in seed 1
    assert targets["sym30", "mean_minus:eac"]["value"] == pytest.approx(0.04 / 3)
    assert targets["annotator", "mean_minus:eac"]["met"] is None  # not trained
    md = render_markdown(results, comparison, {"title": "t"})
    assert "| sym30 | full | 3 | 63.00 ± 1.00 | 0: 62.00, 1: 64.00, 2: 63.00 |" in md
    assert "| sym30 | eac (seed 1) | 65.00 |" in md
    assert "| sym30 | eac | 3 | 0: +2.00, 1: -1.00, 2: +3.00 | +1.33 | -1.00 |" in md


def test_benchmark_trains_every_seed_and_reuses_the_recorded_ones(tmp_path, capsys):
    """``--seeds 0 1``: one run per seed, each with its own noise draw and training subset; the
    header says where the figures came from; seed 0 recorded elsewhere is not trained again."""
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 12, "FER2013Valid": 2})
    common = ["--settings", "sym30", "--variants", "baseline", "--data-root", str(data), "--cpu",
              "optim.batch_size=32", "data.num_workers=0", "model.backbone=resnet10t",
              "data.train_fraction=0.5", "stages.0.epochs=1", "stages.2.epochs=1"]
    first = benchmark_cli.main([*common, "--out", str(tmp_path / "a"), "--seeds", "0"])
    assert list(first["runs"]) == ["sym30-baseline"]
    capsys.readouterr()
    both = benchmark_cli.main([*common, "--out", str(tmp_path / "b"), "--seeds", "0", "1",
                               "--results-from", str(tmp_path / "a" / "results.json")])
    printed = capsys.readouterr().out
    assert "sym30-baseline: finished earlier with this config" in printed
    assert "sym30-baseline-seed1: training" in printed
    assert list(both["runs"]) == ["sym30-baseline", "sym30-baseline-seed1"]
    runs = tmp_path / "b" / "runs"
    assert not (runs / "sym30-baseline").exists()
    seed1 = load_config(runs / "sym30-baseline-seed1" / "config.yaml")
    seed0 = run_config("sym30", "baseline")
    assert (seed1.seed, seed1.data.split_seed, seed1.data.noise.seed) == \
        (seed0.seed + 1, seed0.data.split_seed + 1, seed0.data.noise.seed + 1)
    assert both["per_setting"]["sym30"]["models"]["baseline"]["n_seeds"] == 2
    noisy = [np.load(d / "noisy_labels.npz") for d in (tmp_path / "a" / "runs" / "sym30-baseline",
                                                       runs / "sym30-baseline-seed1")]
    assert not np.array_equal(noisy[0]["changed_mask"], noisy[1]["changed_mask"])
    saved = json.loads((tmp_path / "b" / "results.json").read_text())
    header = saved["header"]
    assert [(r["setting"], r["variant"], r["seed"]) for r in saved["runs"].values()] == \
        [("sym30", "baseline", 0), ("sym30", "baseline", 1)]
    assert header["seeds"] == [0, 1] and header["recipe"] == "configs/benchmark_ferplus.yaml"
    assert header["commit"] and "CPU" in header["machine"]
    assert saved["per_setting"]["sym30"]["models"]["baseline"]["val_accuracy_mean"] == \
        pytest.approx(np.mean([r["val_accuracy"] for r in both["runs"].values()]))
    # --report-only trains nothing: the finished runs and the recorded ones make the table.
    capsys.readouterr()
    report = benchmark_cli.main([*common, "--out", str(tmp_path / "b"), "--seeds", "0", "1", "2",
                                 "--report-only",
                                 "--results-from", str(tmp_path / "a" / "results.json")])
    assert "sym30-baseline-seed2: not finished; left out (--report-only)" in capsys.readouterr().out
    assert list(report["runs"]) == ["sym30-baseline", "sym30-baseline-seed1"]
    assert not (runs / "sym30-baseline-seed2").exists()


# --------------------------------------------------------------------------------------------------
# The data size: the whole training split, one tagger against ten
# --------------------------------------------------------------------------------------------------
def test_the_data_size_trains_the_whole_split_recipe_and_its_baseline_is_the_shipped_control():
    from fer_robust.config import flatten_config
    from fer_robust.noise_benchmark.recipe import SIZES

    size = SIZES["data"]
    assert (size.recipe, size.settings, size.overrides, size.epoch_share) == (
        "ferplus_cpu.yaml", ("clean", "annotator"), (), 1.0)
    full = build_run_config(FERPLUS_CPU, RunSpec("clean", "full"), "data", "/tmp/unused")
    assert full.data.train_fraction == 1.0 and full.model.arch == "two_branch"
    assert sum(st.epochs for st in full.stages) == 36
    # the method as the noise benchmark measured it: robust settings, stage weights, MIM, geometry
    bench = run_config("clean", "full")
    assert full.robust == bench.robust and full.model.mim == bench.model.mim
    assert full.model.output_stride == bench.model.output_stride == 16
    assert [(st.kind, st.loss_weights) for st in full.stages] == \
        [(st.kind, st.loss_weights) for st in bench.stages]
    # configs/ferplus_cpu_baseline.yaml is the baseline the benchmark derives, key for key
    base = build_run_config(FERPLUS_CPU, RunSpec("clean", "baseline"), "data",
                            "runs/ferplus_cpu_baseline")
    assert flatten_config(base) == flatten_config(load_config(ROOT / "configs" /
                                                              "ferplus_cpu_baseline.yaml"))
    # five runs: baselines first, the votes reference once, under one tagger's labels
    assert [r.name for r in plan_runs(list(size.settings), [], list(size.variants))] == [
        "clean-baseline", "annotator-baseline", "clean-full", "annotator-full", "annotator-votes"]
    votes = build_run_config(FERPLUS_CPU, RunSpec("annotator", "votes"), "data", "/tmp/unused")
    annotator_base = build_run_config(FERPLUS_CPU, RunSpec("annotator", "baseline"), "data",
                                      "/tmp/unused")
    assert (votes.method.name, votes.model.arch, votes.model.pooling) == ("votes", "baseline", "avg")
    assert [(st.kind, st.epochs, st.loss_weights) for st in votes.stages] == [
        ("warmup", 36, {"votes_ce": 1.0})]
    assert votes.data == annotator_base.data and votes.optim == annotator_base.optim
    assert votes.seed == annotator_base.seed and votes.model.backbone == "resnet18"
    with pytest.raises(ConfigError, match="'votes' trains under the 'annotator' setting only"):
        plan_runs(["clean"], [], ["baseline", "votes"])
    # the command's defaults follow the size; the memorisation benchmark's stay as they were
    data_args = benchmark_cli.parse_args(["--size", "data"])
    assert data_args.config.resolve() == FERPLUS_CPU
    assert (data_args.settings, data_args.variants) == (["clean", "annotator"],
                                                        ["baseline", "full", "votes"])
    # one setting at a time (two trainings side by side): the votes run goes with annotator
    assert benchmark_cli.parse_args(["--size", "data", "--settings", "clean"]).variants == [
        "baseline", "full"]
    assert benchmark_cli.parse_args(["--size", "data", "--settings", "annotator"]).variants == [
        "baseline", "full", "votes"]
    args = benchmark_cli.parse_args([])
    assert args.config.resolve() == RECIPE == benchmark_cli.DEFAULT_RECIPE.resolve()
    assert (args.settings, args.variants) == (["clean", "sym30", "annotator"], ["baseline", "full"])


def test_the_data_size_reads_one_tagger_against_ten_and_has_its_own_targets():
    from fer_robust.noise_benchmark.comparison import DATA_TARGETS, TARGETS, targets_for

    assert targets_for("data") is DATA_TARGETS and targets_for("full") is TARGETS
    assert targets_for(None) is TARGETS
    results = {
        "clean-baseline": {"val_accuracy": 0.845, "best_val_accuracy": 0.85,
                           "seconds_per_epoch": 100.0},
        "clean-full": {"val_accuracy": 0.843, "seconds_per_epoch": 140.0},
        "annotator-baseline": {"val_accuracy": 0.80, "best_val_accuracy": 0.81,
                               "seconds_per_epoch": 100.0},
        "annotator-full": {"val_accuracy": 0.82, "seconds_per_epoch": 145.0,
                           "tv_given_to_votes_all": 0.40, "tv_targets_to_votes_all": 0.30},
        "annotator-votes": {"val_accuracy": 0.84, "best_val_accuracy": 0.84,
                            "seconds_per_epoch": 101.0},
    }
    c = compare(results, DATA_TARGETS)
    ann = c["per_setting"]["annotator"]
    assert ann["votes"] == 0.84 and ann["votes_gap"] == pytest.approx(0.04)
    assert ann["votes_gap_recovered"] == pytest.approx(0.5)        # 2 of the 4 points
    assert ann["tv_distance_recovered"] == pytest.approx(0.25)     # (0.40 - 0.30) / 0.40
    assert ann["full_minus_clean_baseline"] == pytest.approx(-0.025)
    assert "votes" not in c["per_setting"]["clean"] and "peers" not in ann  # a reference, no peer
    met = {(t["setting"], t["measure"]): t["met"] for t in c["targets"]}
    assert met == {("clean", "baseline"): True,                         # 84.5 >= 84.0
                   ("clean", "margin_over_baseline"): True,             # -0.2 >= -0.3
                   ("annotator", "margin_over_baseline"): True,         # +2.0 >= +1.5
                   ("annotator", "full_minus_clean_baseline"): False,   # -2.5 < -1.5
                   ("annotator", "votes_gap_recovered"): None,          # reported
                   ("annotator", "tv_distance_recovered"): None,
                   ("*", "epoch_time_ratio_mean"): True}                # 1.45x <= 1.5x
    md = render_markdown(results, c, {"title": "t"})
    assert "## One tagger against ten (validation)" in md
    assert "| annotator | 80.00 | 82.00 | 84.00 | 4.00 | 50.00% | 0.400 | 0.300 | 25.00% |" in md
    assert "| clean | cross-entropy val accuracy (last epoch) ≥ 84.0% | 84.50% | yes |" in md
    assert ("| annotator | full − cross-entropy on the clean labels (last epochs) ≥ -1.5 pts | "
            "-2.50 pts | **no** |") in md
    assert "(full − baseline) / (votes − baseline) | 50.00% | reported |" in md
    assert "split F1" not in md  # the memorisation benchmark's targets are not this size's
    # ten taggers' votes not ahead of one tagger's labels: no gap to recover, said so
    results["annotator-votes"]["val_accuracy"] = 0.79
    c = compare(results, DATA_TARGETS)
    assert c["per_setting"]["annotator"]["votes_gap_recovered"] is None
    assert "| n/a (votes not ahead of the baseline) | n/a |" in render_markdown(results, c, {})


def test_benchmark_data_size_end_to_end(tmp_path, capsys):
    """``tools/benchmark.py --size data`` on a tiny FERPlus: the five runs of the size from
    configs/ferplus_cpu.yaml, the votes reference trained on the votes, test accuracy, the one-
    tagger-against-ten figures and the size's targets; a second command trains nothing."""
    from fer_robust.noise_benchmark.comparison import DATA_TARGETS

    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 8, "FER2013Valid": 2, "FER2013Test": 2})
    out = tmp_path / "bench"
    argv = ["--size", "data", "--out", str(out), "--data-root", str(data), "--cpu",
            "optim.batch_size=32", "data.num_workers=0", "model.backbone=resnet10t",
            "stages.0.epochs=1", "stages.2.epochs=1"]
    result = benchmark_cli.main(argv)
    names = ["clean-baseline", "annotator-baseline", "clean-full", "annotator-full",
             "annotator-votes"]
    assert list(result["runs"]) == names
    saved = json.loads((out / "results.json").read_text())
    header = saved["header"]
    assert (header["recipe"], header["size"]) == ("configs/ferplus_cpu.yaml", "data")
    assert header["title"] == "FERPlus at field scale: the whole training split"
    for name, run in saved["runs"].items():
        assert run["epochs"] == 2 and run["test_accuracy"] is not None
        assert run["seconds_per_epoch"] > 0 and run["config_fingerprint"]
    votes_run = out / "runs" / "annotator-votes"
    assert load_config(votes_run / "config.yaml").method.name == "votes"
    records = [json.loads(x) for x in (votes_run / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_votes_ce" in r and "loss_ce" not in r for r in records)
    votes = saved["runs"]["annotator-votes"]
    assert votes["tv_targets_to_votes_all"] == pytest.approx(0.0, abs=1e-6)
    # one tagger's label against the fixture's (0.7, 0.3) votes: TV 0.3 on the majority, else 0.7
    changed = np.load(votes_run / "noisy_labels.npz")["changed_mask"]
    assert votes["tv_given_to_votes_all"] == pytest.approx(0.3 + 0.4 * changed.mean(), abs=1e-5)
    assert votes["noise_rate"] == pytest.approx(changed.mean())
    ann = saved["per_setting"]["annotator"]
    assert ann["votes"] == votes["val_accuracy"]
    assert ann["votes_gap"] == pytest.approx(votes["val_accuracy"]
                                             - saved["runs"]["annotator-baseline"]["val_accuracy"])
    full = saved["runs"]["annotator-full"]
    assert ann["tv_distance_recovered"] == pytest.approx(
        1 - full["tv_targets_to_votes_all"] / full["tv_given_to_votes_all"])
    assert [(t["setting"], t["measure"]) for t in saved["targets"]] == [
        (setting, measure) for setting, measure, _ in DATA_TARGETS]
    md = (out / "results.md").read_text()
    assert md.startswith("# FERPlus at field scale") and "| annotator | votes |" in md
    assert "## One tagger against ten" in md
    assert (out / "curves_annotator.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    again = benchmark_cli.main(argv)
    printed = capsys.readouterr().out
    assert all(f"{name}: finished earlier" in printed for name in names)
    assert again["runs"]["annotator-votes"]["val_accuracy"] == votes["val_accuracy"]


def test_the_local_and_retrieval_ablations_train_end_to_end(tmp_path):
    """``--ablation local retrieval``: the global branch alone (no local logits, no MIM term) and
    soft labels from the model alone both train through the robust stages and relabel."""
    data = tmp_path / "ferplus"
    write_ferplus_fixture(data, {"FER2013Train": 8, "FER2013Valid": 2})
    out = tmp_path / "bench"
    result = benchmark_cli.main([
        "--settings", "sym30", "--variants", "full", "--ablation", "local", "retrieval",
        "--out", str(out), "--data-root", str(data), "--cpu", "optim.batch_size=32",
        "data.num_workers=0", "model.backbone=resnet10t", "data.train_fraction=1.0",
        "stages.0.epochs=1", "stages.2.epochs=1", "robust.noise_gate.threshold=0"])
    assert list(result["runs"]) == ["sym30-full", "sym30-no_local", "sym30-no_retrieval"]
    local = [json.loads(x) for x in
             (out / "runs" / "sym30-no_local" / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in
            (out / "runs" / "sym30-full" / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_local_ce" in r for r in full) and "loss_mim" in full[-1]
    assert not any("loss_mim" in r or "loss_local_ce" in r for r in local)
    assert result["runs"]["sym30-no_local"]["num_relabeled"] > 0
    assert result["runs"]["sym30-no_retrieval"]["num_relabeled"] > 0
    assert set(result["per_setting"]["sym30"]["ablation_contribution"]) == {"local", "retrieval"}
