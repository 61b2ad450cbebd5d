"""``tools/benchmark.py``: the full system against its baseline on real FERPlus, under label noise.

    python tools/benchmark.py                          # full size: 6 trainings, ~1.5 h on 2 cores
    python tools/benchmark.py --quick                  # a fifth of the data, one epoch less
    python tools/benchmark.py --settings sym30 --ablation all      # what each part contributes
    python tools/benchmark.py --data-root /data/ferplus optim.lr=0.001

For every label setting (``clean``: majority labels; ``sym30``: 30% symmetric noise;
``annotator``: one tagger's vote per image) it trains the plain baseline and the full system from
one recipe (``configs/benchmark_ferplus.yaml``; see :mod:`fer_robust.benchmark.recipe` for how the
baseline and the ablations are derived), then writes to ``--out``:

- ``results.json``: per training, the figures of :func:`fer_robust.benchmark.report.summarize_run`
  (validation accuracy, test accuracy when the root has a test split, the split's P/R/F1/AUC,
  relabelling accuracy, distance of soft labels to the 10-tagger votes, seconds per epoch), the
  comparison (damage recovered, margins) and each target, met or not;
- ``results.md``: the same as Markdown tables;
- ``runs/<setting>-<variant>/``: each training's run directory (config, metrics, checkpoints).

Both result files are rewritten (atomically) after every training, and a training that was cut
short resumes from its last checkpoint when the same command runs again; finished trainings are
not repeated. Another recipe or other overrides with the same ``--out`` is an error rather than a
silent mix of results.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

from fer_robust.cli.common import repo_root, user_errors_exit

DEFAULT_RECIPE = repo_root() / "configs" / "benchmark_ferplus.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    from fer_robust.benchmark.recipe import ABLATIONS, SETTINGS, SIZES
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=DEFAULT_RECIPE,
                   help="the full system's recipe (default: configs/benchmark_ferplus.yaml)")
    p.add_argument("--data-root", default=None, help="FERPlus root (default: the recipe's data.root)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help="label settings to train under (default: all)")
    p.add_argument("--size", choices=list(SIZES), default="full")
    p.add_argument("--quick", action="store_const", const="quick", dest="size",
                   help="same as --size quick: 20%% of the training split, one epoch less")
    p.add_argument("--ablation", nargs="*", default=[], metavar="PART",
                   help=f"also train the full system with each PART off in turn: "
                        f"{', '.join(ABLATIONS)} or all")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: runs/benchmark_ferplus_<size>)")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides applied to every training, e.g. optim.lr=0.001")
    return p.parse_args(argv)


def machine_description() -> str:
    import os

    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {device}; "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def labels_of_run(cfg, run_dir: Path):
    """(given labels, true labels or None, votes or None) of a run's training split, from disk."""
    from dataclasses import replace

    from fer_robust.data.noise import load_noisy_labels
    from fer_robust.data.registry import build_dataset
    dataset = build_dataset(replace(cfg.data, cache_in_memory=False), "train")
    given, true = dataset.targets.copy(), None
    noisy_file = run_dir / "noisy_labels.npz"
    if noisy_file.is_file():
        given, true, _ = load_noisy_labels(noisy_file)
    return given, true, dataset.votes


def test_accuracy(trainer) -> float | None:
    """Accuracy of the trainer's final model on the test split, or None when the root has none."""
    from fer_robust.data._reading import SplitNotFoundError
    from fer_robust.data.loaders import build_eval_loader
    from fer_robust.data.registry import build_dataset
    from fer_robust.data.transforms import build_transform
    from fer_robust.engine.evaluation import classification_metrics, predict_logits
    cfg = trainer.cfg
    try:
        test_set = build_dataset(cfg.data, "test", build_transform(cfg.data, train=False))
    except SplitNotFoundError:
        return None
    loader = trainer.accelerator.prepare(build_eval_loader(test_set, cfg.optim.eval_batch_size,
                                                           cfg.data.num_workers))
    logits, labels, _ = predict_logits(trainer.model, loader, trainer.accelerator, progress=False)
    return classification_metrics(logits, labels, trainer.class_names)["accuracy"]


def check_same_config(cfg, run_dir: Path) -> None:
    """A run directory is only continued with the config it was started with."""
    from fer_robust.config import ConfigError, config_to_dict, load_config
    saved_file = run_dir / "config.yaml"
    if not saved_file.is_file():
        return
    saved = config_to_dict(load_config(saved_file))
    wanted = config_to_dict(cfg)
    diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
    if diff:
        raise ConfigError(f"{run_dir} was trained with another config (differs in {diff}); use "
                          "another --out or remove that run directory")


def run_one(cfg, run_dir: Path, cpu: bool) -> dict:
    """Train (or finish training) one run and return its summary."""
    from fer_robust.benchmark.report import summarize_run
    from fer_robust.engine.trainer import Trainer
    check_same_config(cfg, run_dir)
    resume = (run_dir / "checkpoints" / "latest").is_file()
    trainer = Trainer(cfg, resume=resume, cpu=cpu).setup()
    trainer.fit()
    test_acc = test_accuracy(trainer)
    if not trainer.is_main:
        return {}
    given, true, votes = labels_of_run(cfg, run_dir)
    summary = summarize_run(run_dir, given, true, votes, cfg.robust.split.threshold)
    summary["test_accuracy"] = test_acc
    return summary


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("benchmark"):
        from fer_robust.benchmark.recipe import ABLATIONS, build_run_config, plan_runs
        from fer_robust.benchmark.report import compare, render_markdown
        from fer_robust.utils import atomic_write_json, atomic_write_text

        if not args.config.is_file():
            raise FileNotFoundError(f"recipe not found: {args.config}")
        ablations = list(ABLATIONS) if args.ablation == ["all"] else args.ablation
        specs = plan_runs(args.settings, ablations)
        overrides = list(args.overrides)
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        out = args.out or Path(f"runs/benchmark_ferplus_{args.size}")
        configs = {spec.name: build_run_config(args.config, spec, args.size, out / "runs" / spec.name,
                                               overrides) for spec in specs}  # all checked up front
        results_file = out / "results.json"
        previous = json.loads(results_file.read_text())["runs"] if results_file.is_file() else {}
        # Rows of other settings or ablations trained earlier into the same --out stay in the table.
        results: dict = {k: v for k, v in previous.items() if k not in configs}
        header = {"title": "FERPlus label-noise benchmark", "command": " ".join(
                      ["python tools/benchmark.py", *(argv if argv is not None else sys.argv[1:])]),
                  "recipe": str(args.config), "size": args.size,
                  "data root": next(iter(configs.values())).data.root,
                  "machine": machine_description()}
        for spec in specs:
            cfg, run_dir = configs[spec.name], out / "runs" / spec.name
            if spec.name in previous and (run_dir / "last_model.safetensors").is_file():
                check_same_config(cfg, run_dir)
                results[spec.name] = previous[spec.name]
                print(f"[benchmark] {spec.name}: finished earlier, kept")
                continue
            print(f"[benchmark] {spec.name}: training -> {run_dir}", flush=True)
            t0 = time.perf_counter()
            summary = run_one(cfg, run_dir, args.cpu)
            if not summary:  # not the main process
                continue
            summary["wall_seconds"] = time.perf_counter() - t0
            results[spec.name] = summary
            comparison = compare(results)
            header["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
            atomic_write_json(results_file, {"header": header, "runs": results, **comparison})
            atomic_write_text(out / "results.md", render_markdown(results, comparison, header))
            print(f"[benchmark] {spec.name}: val acc {summary['val_accuracy']:.4f}, "
                  f"{summary['seconds_per_epoch']:.0f} s/epoch; wrote {out / 'results.md'}", flush=True)
        if not results:
            return {}
        comparison = compare(results)
        atomic_write_json(results_file, {"header": header, "runs": results, **comparison})
        atomic_write_text(out / "results.md", render_markdown(results, comparison, header))
        print(render_markdown(results, comparison, header))
        return {"runs": results, **comparison}


if __name__ == "__main__":
    main()
