"""``tools/benchmark.py``: the full system against its baseline on real FERPlus, under label noise.

    python tools/benchmark.py                          # full size: 6 trainings, ~1.5 h on 2 cores
    python tools/benchmark.py --quick                  # 3% of the training split, 20 epochs, batch 32
    python tools/benchmark.py --size data              # the whole training split: 5 trainings
    python tools/benchmark.py --settings sym30 --ablation all      # what each part contributes
    python tools/benchmark.py --variants scn eac gce   # the peers, beside the runs already in --out
    python tools/benchmark.py --seeds 0 1 2 --settings sym30 --variants baseline full eac
    python tools/benchmark.py --data-root /data/ferplus optim.lr=0.001

For every label setting (``clean``: majority labels; ``sym30``: 30% symmetric noise;
``annotator``: one tagger's vote per image) it trains the plain baseline and the full system from
one recipe (``configs/benchmark_ferplus.yaml``; see :mod:`fer_robust.noise_benchmark.recipe` for how
the baseline, the peers (SCN, EAC, GCE: ``--variants``) and the ablations are derived), then
writes to ``--out``:

- ``results.json``: per training, the figures of
  :func:`fer_robust.noise_benchmark.report.summarize_run` (validation accuracy, test accuracy when
  the root has a test split, the split's P/R/F1/AUC, relabelling accuracy, distance of soft labels
  to the 10-tagger votes, seconds per epoch; for SCN its relabelling's precision and accuracy),
  the comparison (damage recovered, margins over the baseline and over each peer) and each target,
  met or not;
- ``results.md``: the same as Markdown tables;
- ``runs/<setting>-<variant>[-seed<k>]/``: each training's run directory (config, metrics,
  checkpoints).

``--seeds`` trains every requested run once per seed: seed ``k`` draws another training subset,
noise, initial weights and batch order (:data:`~fer_robust.noise_benchmark.recipe.SEEDED_KEYS`);
seed 0 is the recipe as written and keeps the run names results had before seeds existed, so
recorded seed-0 runs are reused. The tables then give, per setting and model, the mean ± standard
deviation of last-epoch validation accuracy over the seeds, and per peer the paired difference
full − peer of every seed trained by both.

Both result files are rewritten (atomically) after every training. Running the same command again
does not repeat finished trainings (their summaries are recomputed from their run directories), and
continues one that was cut short from its last checkpoint. Each summary carries its per-epoch
curves and a fingerprint of the config it was trained with, so a results file alone stands for its
runs: a run whose directory is absent but whose summary in ``--results-from`` (by default the
committed ``benchmarks/results/benchmark_ferplus_<size>.json``) has this command's fingerprint is
not trained again, and the benchmark continues on a machine that does not keep the run directories. Trainings of other settings or ablations
in the same ``--out`` join the table. Every run directory is checked against the config this
command would give it before anything trains: another recipe, size or overrides for the same
``--out`` is an error rather than a silent mix of results.

``--size data`` trains the project's whole-training-split recipe (``configs/ferplus_cpu.yaml``,
25,045 images) under ``clean`` and ``annotator`` labels: the baseline and the full system in both,
and the baseline trained on the 10 taggers' vote distributions (``annotator-votes``), the mark the
relabelling of one tagger's labels is read against. Its targets are the data size's
(:data:`~fer_robust.noise_benchmark.comparison.DATA_TARGETS`); its results go to
``runs/benchmark_ferplus_data`` and are recorded as ``benchmarks/results/benchmark_ferplus_data``.

Under ``accelerate launch`` every process trains; the main process alone writes the results.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from accelerate import PartialState

from fer_robust.cli.common import repo_root, tool_entry, user_errors_exit
from fer_robust.config import (LATER_KEY_DEFAULTS, RESULT_NEUTRAL_KEYS, Config, ConfigError,
                               flatten_config)
from fer_robust.data._reading import SplitNotFoundError
from fer_robust.data.loaders import build_eval_loader
from fer_robust.data.noise import load_noisy_labels
from fer_robust.data.registry import build_dataset, read_split
from fer_robust.data.transforms import build_transform
from fer_robust.engine.checkpoint import latest_checkpoint
from fer_robust.engine.distributed import build_accelerator
from fer_robust.engine.evaluation import classification_metrics, predict_logits
from fer_robust.engine.inference import load_trained_model
from fer_robust.engine.run_dir import hold_run_dir
from fer_robust.engine.trainer import Trainer
from fer_robust.noise_benchmark.recipe import (ABLATIONS, DEFAULT_VARIANTS, ONE_SETTING_VARIANTS,
                                               SETTINGS, SIZES, VARIANTS, RunSpec,
                                               applicable_ablations, build_run_config, ignored_by,
                                               parse_run_name, plan_runs)
from fer_robust.noise_benchmark.comparison import compare, targets_for
from fer_robust.noise_benchmark.report import plot_setting_curves, render_markdown, summarize_run
from fer_robust.provenance import (command_line, git_commit, machine_description, repo_relative,
                                   timestamp)
from fer_robust.utils import atomic_write_json, atomic_write_text, json_safe
from fer_robust.validation import load_config

DEFAULT_RECIPE = repo_root() / "configs" / "benchmark_ferplus.yaml"


def size_recipe(size: str) -> Path:
    """The recipe a size trains unless ``--config`` names another (``configs/<file>``)."""
    return repo_root() / "configs" / SIZES[size].recipe


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="the full system's recipe (default: the size's, configs/"
                        "benchmark_ferplus.yaml for full and quick, configs/ferplus_cpu.yaml for "
                        "data)")
    p.add_argument("--data-root", default=None, help="FERPlus root (default: the recipe's data.root)")
    p.add_argument("--settings", nargs="+", default=None, choices=list(SETTINGS),
                   help="label settings to train under (default: the size's: all for full and "
                        "quick, clean and annotator for data)")
    p.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS),
                   help=f"models to train per setting (default: the size's: "
                        f"{' '.join(DEFAULT_VARIANTS)} for full and quick, "
                        f"{' '.join(SIZES['data'].variants)} for data; the peers scn, eac and gce "
                        "on request; votes trains under annotator only); trained variant by "
                        "variant, so --variants baseline full trains every baseline first")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="K",
                   help="train every requested run once per seed K (default: 0, the recipe as "
                        "written); seed K moves the subset, the noise, the initial weights and the "
                        "batch order, and runs already recorded for a seed are reused")
    p.add_argument("--size", choices=list(SIZES), default="full",
                   help="full: the memorisation benchmark (15%% of the training split, 40 epochs); "
                        "quick: 3%% of it, 20 epochs; data: the whole training split "
                        "(configs/ferplus_cpu.yaml) under clean and annotator labels, with the "
                        "vote-distribution reference")
    p.add_argument("--quick", action="store_const", const="quick", dest="size",
                   help="same as --size quick: 3%% of the training split, half the epochs, batch 32")
    p.add_argument("--ablation", nargs="*", default=[], metavar="PART",
                   help=f"also train the full system with each PART off in turn: "
                        f"{', '.join(ABLATIONS)}, or all (those the recipe has on)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/benchmark_ferplus_<size>)")
    p.add_argument("--results-from", type=Path, default=None, metavar="JSON",
                   help="an earlier results.json whose runs count as finished when their config "
                        "fingerprint equals this command's (default: the committed "
                        "benchmarks/results/benchmark_ferplus_<size>.json, if any): the benchmark "
                        "continues across machines that do not keep the run directories")
    p.add_argument("--report-only", action="store_true",
                   help="train nothing: rebuild the tables from the finished runs in --out and the "
                        "recorded results, listing the requested runs that are not finished (e.g. "
                        "after run directories trained on several machines were gathered)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides applied to every training, e.g. optim.lr=0.001")
    args = p.parse_args(argv)
    size = SIZES[args.size]
    args.config = args.config or size_recipe(args.size)
    args.settings = args.settings or list(size.settings)
    # The size's own variants, less one that trains under a setting not requested (--size data
    # --settings clean trains no votes run); asked for by name, such a variant is an error.
    args.variants = args.variants or [v for v in size.variants
                                      if ONE_SETTING_VARIANTS.get(v, args.settings[0])
                                      in args.settings]
    return args


def labels_of_run(cfg, run_dir: Path):
    """(given labels, majority labels, votes or None, number of classes) of a run's training split."""
    dataset = build_dataset(replace(cfg.data, cache_in_memory=False), "train")
    given, true = dataset.clean_targets.copy(), dataset.clean_targets.copy()
    if cfg.data.noise.type != "none":
        noisy_file = run_dir / "noisy_labels.npz"
        if not noisy_file.is_file():
            raise ConfigError(f"{noisy_file} is missing: the run's noisy labels cannot be known")
        given, saved_true, _ = load_noisy_labels(noisy_file)
        if not np.array_equal(saved_true, true):
            raise ConfigError(f"{noisy_file}: its clean labels differ from {cfg.data.root}'s")
    return given, true, dataset.votes, dataset.num_classes


def test_accuracy(model, cfg, class_names, accelerator) -> float | None:
    """Accuracy of ``model`` on the test split, or None when the root has none."""
    try:
        test_set = build_dataset(cfg.data, "test", build_transform(cfg.data, train=False))
    except SplitNotFoundError:
        return None
    loader = accelerator.prepare(build_eval_loader(test_set, cfg.optim.eval_batch_size,
                                                   cfg.data.num_workers))
    logits, labels, _ = predict_logits(model, loader, accelerator, progress=False)
    return classification_metrics(logits, labels, class_names)["accuracy"]


def result_relevant(cfg) -> dict:
    """The flattened config of a run without the keys that do not change what it computes (the
    neutral ones, for a baseline the two-branch system's own settings, and settings added since
    runs were recorded while they hold the value earlier runs had: ``LATER_KEY_DEFAULTS``)."""
    unused = ignored_by(cfg)
    return {k: v for k, v in sorted(flatten_config(cfg).items())
            if k not in RESULT_NEUTRAL_KEYS and not k.startswith(unused)
            and not (k in LATER_KEY_DEFAULTS and v == LATER_KEY_DEFAULTS[k])}


def config_fingerprint(cfg) -> str:
    """A short hash of :func:`result_relevant`: two runs with one fingerprint train the same."""
    text = json.dumps(json_safe(result_relevant(cfg)), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_same_config(cfg, run_dir: Path) -> None:
    """A run directory is only continued (or reported) with the config it was trained with.

    Keys that do not change the training are not compared: the neutral ones above and, for a
    baseline, the two-branch system's own settings (``recipe.BASELINE_UNUSED``), so tuning the
    full system in the recipe keeps the finished baselines.
    """
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved, wanted = result_relevant(load_config(saved_file)), result_relevant(cfg)
    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
    if diff:
        raise ConfigError(f"{run_dir} was trained with another config (differs in {diff[:8]}); use "
                          "another --out or remove that run directory")


def run_one(cfg, run_dir: Path, cpu: bool, accelerator_holder: list) -> dict:
    """Train one run (continuing it from its last checkpoint if it has one); its summary.

    The run directory's config is checked again here, not only when the benchmark was planned:
    a directory replaced while earlier runs trained (another process, a branch) is refused rather
    than continued with this config."""
    check_same_config(cfg, run_dir)
    if run_dir.exists() and latest_checkpoint(run_dir) is None:
        # Cut short before its first checkpoint: nothing to continue from. Removed only while no
        # other process trains in it (engine.run_dir); the Trainer holds it again to train.
        state = PartialState()
        if state.is_main_process:
            print(f"[benchmark] {run_dir} has no checkpoint yet; starting it again", flush=True)
            with hold_run_dir(run_dir):
                shutil.rmtree(run_dir)
        state.wait_for_everyone()
    resume = latest_checkpoint(run_dir) is not None
    trainer = Trainer(cfg, resume=resume, cpu=cpu).setup()
    accelerator_holder[:] = [trainer.accelerator]
    trainer.fit(end_training=False)
    test_acc = test_accuracy(trainer.model, cfg, trainer.class_names, trainer.accelerator)
    return summarize(cfg, run_dir, test_acc) if trainer.is_main else {}


def summarize(cfg, run_dir: Path, test_acc: float | None) -> dict:
    given, true, votes, num_classes = labels_of_run(cfg, run_dir)
    summary = summarize_run(run_dir, given, true, votes, num_classes, method=cfg.method.name)
    summary["test_accuracy"] = test_acc
    summary["config_fingerprint"] = config_fingerprint(cfg)
    return summary


def summarize_finished(cfg, run_dir: Path, previous: dict | None, cpu: bool) -> dict:
    """Summary of a run trained earlier, recomputed from its files (test accuracy re-evaluated
    only when the earlier summary lacks it and the root has a test split)."""
    test_acc = (previous or {}).get("test_accuracy")
    if (test_acc is None and PartialState().num_processes == 1 and _has_test_split(cfg)
            and (run_dir / "last_model.safetensors").is_file()):
        _, model, class_names, _ = load_trained_model(run_dir / "last_model.safetensors")
        accelerator = build_accelerator(cfg.mixed_precision, cpu=cpu)
        test_acc = test_accuracy(accelerator.prepare(model), cfg, class_names, accelerator)
    summary = summarize(cfg, run_dir, test_acc)
    if previous and "wall_seconds" in previous:
        summary["wall_seconds"] = previous["wall_seconds"]
    return summary


def is_finished(run_dir: Path) -> bool:
    """A training that ran its last epoch: the trainer writes ``final_fit.json`` after it. The
    light files of a finished run (config, metrics, ``final_fit.json``, noisy labels, the last
    sample state) are enough to summarise it, so finished runs can be kept without weights."""
    return (run_dir / "final_fit.json").is_file() or (run_dir / "last_model.safetensors").is_file()


def _has_test_split(cfg) -> bool:
    try:
        read_split(replace(cfg.data, cache_in_memory=False), "test")
    except SplitNotFoundError:
        return False
    return True


def plan_configs(args: argparse.Namespace, out: Path, recorded: dict | None = None
                 ) -> tuple[list[str], dict[str, Config], set[str]]:
    """The runs of the table, in training order, each one's config, and the requested runs (the
    only ones that may train): the requested ones first, then the finished runs trained earlier
    into ``out`` for other settings or ablations (they join the table). Like the requested ones
    they must come from this recipe, size and overrides: every run directory is checked against
    its config before anything trains."""
    if not args.config.is_file():
        raise FileNotFoundError(f"recipe not found: {args.config}")
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    ablations = (applicable_ablations(args.config, args.size, overrides) if args.ablation == ["all"]
                 else list(dict.fromkeys(args.ablation)))
    specs = plan_runs(list(dict.fromkeys(args.settings)), ablations,
                      list(dict.fromkeys(args.variants)), list(dict.fromkeys(args.seeds)))

    def config_of(spec: RunSpec) -> Config:
        return build_run_config(args.config, spec, args.size, out / "runs" / spec.name, overrides)

    configs = {spec.name: config_of(spec) for spec in specs}
    earlier = []
    for run_dir in sorted((out / "runs").glob("*-*")) if (out / "runs").is_dir() else []:
        if run_dir.name not in configs and is_finished(run_dir):
            try:
                configs[run_dir.name] = config_of(parse_run_name(run_dir.name))
            except (ConfigError, KeyError):
                raise ConfigError(f"{run_dir} is not a run of this benchmark") from None
            earlier.append(run_dir.name)
    for name in recorded or {}:  # finished on another machine, with this recipe and size
        if name in configs or (out / "runs" / name).exists() or "-" not in name:
            continue
        try:
            cfg = config_of(parse_run_name(name))
        except (ConfigError, KeyError):
            continue
        if recorded_summary(cfg, out / "runs" / name, recorded, name) is not None:
            configs[name] = cfg
            earlier.append(name)
    for name, cfg in configs.items():  # all checked before anything is trained
        check_same_config(cfg, out / "runs" / name)
    requested = [spec.name for spec in specs]
    return [*requested, *earlier], configs, set(requested)


def previous_summaries(results_file: Path) -> dict:
    """The run summaries of an earlier ``results.json`` (empty when there is none, or it is
    unreadable: every summary is then recomputed from the run directories)."""
    if not results_file.is_file():
        return {}
    try:
        return json.loads(results_file.read_text())["runs"]
    except (ValueError, KeyError):
        return {}


def results_header(args: argparse.Namespace, argv, configs: dict[str, Config]) -> dict:
    """The report's header: where the figures came from (title, command, recipe and data root
    relative to the repository, size, seeds, git commit, machine; the date is added when the
    results are written)."""
    return {"title": SIZES[args.size].title,
            "command": command_line("tools/benchmark.py", argv),
            "recipe": repo_relative(args.config), "size": args.size,
            "seeds": list(dict.fromkeys(args.seeds)),
            "data root": repo_relative(next(iter(configs.values())).data.root),
            "commit": git_commit(),
            "machine": machine_description(args.cpu, PartialState().num_processes)}


def write_results(out: Path, header: dict, results: dict) -> dict:
    """Compare the runs against the targets of the header's size and (atomically) rewrite
    ``results.json``, ``results.md`` and the curves of every setting; returns the comparison.
    Every run's summary carries its ``setting``, ``variant`` and ``seed``."""
    for name, summary in results.items():
        spec = parse_run_name(name)
        summary.update(setting=spec.setting, variant=spec.variant, seed=spec.seed)
    comparison = compare(results, targets_for(header.get("size")))
    header["date"] = timestamp()
    atomic_write_json(out / "results.json", json_safe({"header": header, "runs": results,
                                                       **comparison}))
    atomic_write_text(out / "results.md", render_markdown(results, comparison, header))
    specs = {name: parse_run_name(name) for name in results}
    for setting in dict.fromkeys(spec.setting for spec in specs.values()):
        # Seed 0 only: one line per model keeps the figure readable.
        curves = {spec.variant: results[name]["curves"] for name, spec in specs.items()
                  if spec.setting == setting and spec.seed == 0 and "curves" in results[name]}
        plot_setting_curves(curves, out / f"curves_{setting}.png", setting)
    return comparison


def recorded_summary(cfg, run_dir: Path, recorded: dict, name: str) -> dict | None:
    """The summary of run ``name`` from an earlier results file, when the run directory is absent
    and the summary was computed from a run with this exact config (same fingerprint)."""
    summary = recorded.get(name)
    if run_dir.exists() or not summary or "curves" not in summary:
        return None
    return summary if summary.get("config_fingerprint") == config_fingerprint(cfg) else None


def run_all(names: list[str], configs: dict[str, Config], out: Path, header: dict,
            cpu: bool, recorded: dict | None = None, trainable: set[str] | None = None,
            report_only: bool = False) -> dict:
    """Train every unfinished run in order (summarising each and rewriting the results after
    it); a finished run's summary is recomputed from its files, or, without its run directory,
    taken from ``recorded`` (an earlier results file) when its config fingerprint matches.
    Only the runs in ``trainable`` (all when None: the requested ones) are trained; a run listed
    for the table alone that is unfinished by the time its turn comes (another process is
    training it) or holds another config by then (it was replaced) is left out of the table,
    never trained or summarised under this config here; a requested one of another config is an
    error. With ``report_only`` nothing trains: unfinished runs are named and left out.
    Returns the summaries (on the main process; empty elsewhere)."""
    is_main = PartialState().is_main_process
    previous = previous_summaries(out / "results.json")
    recorded = recorded or {}
    results: dict = {}
    accelerator_holder: list = []
    for name in names:
        cfg, run_dir = configs[name], out / "runs" / name
        earlier = recorded_summary(cfg, run_dir, {**recorded, **previous}, name)
        if earlier is not None:
            results[name] = earlier
            if is_main:
                print(f"[benchmark] {name}: finished earlier with this config; summary from the "
                      "results file", flush=True)
            continue
        table_only = trainable is not None and name not in trainable
        try:  # checked again now: another process may have replaced it since planning
            check_same_config(cfg, run_dir)
        except ConfigError:
            if not table_only:
                raise
            if is_main:
                print(f"[benchmark] {name}: {run_dir} holds a run of another config now; left "
                      "out", flush=True)
            continue
        if is_finished(run_dir):
            if is_main:
                results[name] = summarize_finished(cfg, run_dir, previous.get(name), cpu)
                print(f"[benchmark] {name}: finished earlier, summary recomputed from its files")
            continue
        if report_only:
            if is_main:
                print(f"[benchmark] {name}: not finished; left out (--report-only)", flush=True)
            continue
        if table_only:
            if is_main:
                print(f"[benchmark] {name}: listed for the table as finished, but {run_dir} is "
                      "unfinished now; left out (not requested, so not trained here)", flush=True)
            continue
        print(f"[benchmark] {name}: training -> {run_dir}", flush=True)
        t0 = time.perf_counter()
        summary = run_one(cfg, run_dir, cpu, accelerator_holder)
        if not is_main:
            continue
        summary["wall_seconds"] = time.perf_counter() - t0
        results[name] = summary
        write_results(out, header, results)
        print(f"[benchmark] {name}: val acc {summary['val_accuracy']:.4f}, "
              f"{summary['seconds_per_epoch']:.0f} s/epoch; wrote {out / 'results.md'}", flush=True)
    if accelerator_holder:
        accelerator_holder[0].end_training()
    return results


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("benchmark"):
        out = args.out or Path(f"runs/benchmark_ferplus_{args.size}")
        recorded_file = args.results_from or (repo_root() / "benchmarks" / "results"
                                              / f"benchmark_ferplus_{args.size}.json")
        recorded = previous_summaries(recorded_file)
        names, configs, requested = plan_configs(args, out, recorded)
        header = results_header(args, argv, configs)
        try:
            results = run_all(names, configs, out, header, args.cpu, recorded,
                              trainable=requested, report_only=args.report_only)
        except KeyboardInterrupt:
            raise KeyboardInterrupt("the same command continues: finished runs are kept and the "
                                    "interrupted one resumes from its last checkpoint in "
                                    f"{out / 'runs'}") from None
        if not PartialState().is_main_process or not results:
            return {}
        comparison = write_results(out, header, results)
        print(render_markdown(results, comparison, header))
        return {"runs": results, **comparison}


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
