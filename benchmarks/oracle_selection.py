"""How far can sample selection go at the benchmark's budget? Train with a perfect split.

    python benchmarks/oracle_selection.py --settings sym30 annotator \
        --baseline-results benchmarks/results/benchmark_ferplus_full.json
    python benchmarks/oracle_selection.py --settings sym30 --warmup-epochs 1 --size quick

Trains the benchmark's baseline (``configs/benchmark_ferplus.yaml`` turned into the plain model by
:func:`fer_robust.noise_benchmark.recipe.build_run_config`: same backbone, input, epochs, optimiser,
schedule and seed) under a noisy label setting, with ``--warmup-epochs`` epochs on the given labels
(default: as many as the full system's warm-up, so that the bound starts selecting when the method
does) and then, for the remaining epochs, cross-entropy on only the samples whose given label IS
the true one: the split every selection method aims at, known here from the injected noise. No method
that has to find the noise from a warmed-up model can do better by dropping samples; relabelling
can add back what the dropped samples carry, at the accuracy of its soft labels.

This is a measurement, never a training recipe: it reads the true labels. The oracle is a stage
kind of its own (``oracle_selection``), registered only while this script's trainings run
(:func:`fer_robust.engine.stages.registered_stage`), so no config outside it can name it.
Prints, and saves to
``benchmarks/results/oracle_selection_<size>.json``, the validation accuracy after every epoch per
setting, next to the benchmark's targets for that setting (computed from the baseline's results
when ``--baseline-results`` points to a benchmark ``results.json``).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_robust.noise_benchmark.recipe import (  # noqa: E402
    SETTINGS, RunSpec, build_run_config, warmup_epochs)
from fer_robust.noise_benchmark.comparison import TARGETS  # noqa: E402
from fer_robust.config import StageConfig  # noqa: E402
from fer_robust.engine.stages import Stage, StageInputs, registered_stage  # noqa: E402
from fer_robust.provenance import provenance, repo_relative  # noqa: E402
from fer_robust.robust.selection import RobustDecision  # noqa: E402
from fer_robust.utils import atomic_write_json  # noqa: E402
from fer_robust.validation import validate  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
#: The oracle's stage kind, registered only while :func:`_train_with_oracle_split` runs.
ORACLE_KIND = "oracle_selection"


class OracleSelectionStage(Stage):
    """Before each epoch: cross-entropy weight 1 for samples whose given label is the true one,
    0 for the others; no soft labels."""

    def on_epoch_start(self, inputs: StageInputs) -> dict:
        state = inputs.sample_state
        if state.true_labels is None:
            raise ValueError("the oracle split needs a noisy label setting (true labels known)")
        keep = state.given_labels == state.true_labels
        state.apply_decision(RobustDecision.selection_only(keep, state.given_labels,
                                                           inputs.num_classes))
        return {"clean_ratio": float(keep.mean())}


def _train_with_oracle_split(cfg, cpu: bool) -> None:
    """Validate and train ``cfg``, whose oracle stages name :data:`ORACLE_KIND`; the kind is
    registered for this training only, so nothing else in the process sees the oracle."""
    from fer_robust.engine.trainer import Trainer
    with registered_stage(ORACLE_KIND, OracleSelectionStage):
        validate(cfg)
        Trainer(cfg, cpu=cpu).setup().fit()


def _targets(baseline: dict, setting: str) -> dict | None:
    """The accuracy ``setting``'s targets (:data:`~fer_robust.noise_benchmark.comparison.TARGETS`) ask
    of the full system, from a results.json's baseline figures."""
    runs = baseline.get("runs", {})
    try:
        clean = runs["clean-baseline"]["val_accuracy"]
        noisy = runs[f"{setting}-baseline"]["val_accuracy"]
    except (KeyError, TypeError):
        return None
    bounds = {what: bound for where, what, bound in TARGETS if where == setting}
    bars = []
    if "damage_recovered" in bounds:
        bars.append(noisy + bounds["damage_recovered"] * (clean - noisy))
    if "margin_over_baseline" in bounds:
        bars.append(noisy + bounds["margin_over_baseline"])
    if not bars:
        return None
    return {"baseline": noisy, "clean_baseline": clean, "bar": max(bars)}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "benchmark_ferplus.yaml")
    p.add_argument("--settings", nargs="+", default=["sym30", "annotator"],
                   choices=[s for s in SETTINGS if s != "clean"])
    p.add_argument("--size", default="full", choices=["full", "quick"])
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help="epochs on the given labels before the oracle split (default: the full "
                        "system's warm-up in this recipe and size)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "oracle_selection")
    p.add_argument("--results-file", type=Path, default=None,
                   help="where to save the figures (default benchmarks/results/oracle_selection_<size>.json)")
    p.add_argument("--baseline-results", type=Path, default=None,
                   help="a benchmark results.json, to print the targets next to the bound")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = p.parse_args(argv)

    baseline = json.loads(args.baseline_results.read_text()) if args.baseline_results else {}
    warmup = args.warmup_epochs
    if warmup is None:  # the stages do not depend on the label setting
        warmup = warmup_epochs(build_run_config(args.config, RunSpec(args.settings[0], "full"),
                                                args.size, args.out, args.overrides))
    report = {"provenance": provenance(argv, __file__, cpu=args.cpu),
              "recipe": repo_relative(args.config), "warmup_epochs": warmup,
              "size": args.size, "settings": {}}
    for setting in args.settings:
        cfg = build_run_config(args.config, RunSpec(setting, "baseline"), args.size,
                               args.out / setting, args.overrides)
        total = sum(st.epochs for st in cfg.stages)
        if not 0 < warmup < total:
            raise SystemExit(f"--warmup-epochs must be between 1 and {total - 1}")
        cfg.stages = [
            StageConfig(name="warmup", kind="warmup", epochs=warmup,
                        loss_weights={"ce": 1.0}),
            StageConfig(name="oracle_split", kind=ORACLE_KIND, epochs=total - warmup,
                        loss_weights={"ce": 1.0}),
        ]
        _train_with_oracle_split(cfg, args.cpu)
        trainer_dir = Path(cfg.output_dir)
        rows = [json.loads(line) for line in (trainer_dir / "metrics.jsonl").read_text().splitlines()]
        entry = {"val_accuracy_per_epoch": [r["val_accuracy"] for r in rows],
                 "val_accuracy": rows[-1]["val_accuracy"],
                 "clean_ratio": rows[-1].get("clean_ratio")}
        bar = _targets(baseline, setting)
        if bar:
            entry["targets"] = bar
        report["settings"][setting] = entry
        line = " ".join(f"{a * 100:.2f}" for a in entry["val_accuracy_per_epoch"])
        extra = f" (target bar {bar['bar'] * 100:.2f}, baseline {bar['baseline'] * 100:.2f})" if bar else ""
        print(f"{setting}: oracle split after {warmup} epoch(s): {line}{extra}")
    atomic_write_json(args.results_file or RESULTS / f"oracle_selection_{args.size}.json", report)
    return report


if __name__ == "__main__":
    main()
