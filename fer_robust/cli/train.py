"""``tools/train.py``: train on a benchmark from a YAML config with command-line overrides.

    python tools/train.py --config configs/demo.yaml
    python tools/train.py --config configs/ferplus_cpu.yaml data.root=../shared/data/ferplus \\
        data.noise.type=symmetric data.noise.rate=0.3 output_dir=runs/ferplus_sym30
    python tools/train.py --resume runs/ferplus_sym30          # continue an interrupted run
    # the robust stages again with other settings from the end of the warm-up (engine.branching):
    python tools/train.py --config runs/ferplus_sym30/config.yaml output_dir=runs/sym30_floor \\
        robust.relabel.min_confidence=0.7 --branch-from runs/ferplus_sym30/checkpoints/epoch_001

``--resume`` is exact or refuses: it starts from the newest kept checkpoint whose files are all
whole (a damaged newer one is passed over with a warning), and refuses when only checkpoints
without their random states are left, unless ``--resume-inexact`` (recorded in metrics.jsonl). A
run cut short before its first checkpoint starts again from epoch 0. Ctrl-C ends the run with one
line saying where it can be resumed (exit status 130). One run writes into an ``output_dir`` at a
time: a second is refused, naming the process that holds it (:mod:`fer_robust.engine.run_dir`).
    accelerate launch --num_processes 4 tools/train.py --config configs/rafdb.yaml data.root=...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fer_robust.cli.common import tool_entry, user_errors_exit
from fer_robust.config import ConfigError
from fer_robust.validation import load_config


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=None,
                   help="YAML config (defaults to the built-in demo settings)")
    p.add_argument("--resume", nargs="?", const="", default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR (or in the config's output_dir) from its last "
                        "checkpoint, with the config saved there")
    p.add_argument("--resume-inexact", action="store_true",
                   help="with --resume: when no kept checkpoint has its random states, continue "
                        "from one without them (not an exact replay; recorded in metrics.jsonl)")
    p.add_argument("--branch-from", type=Path, default=None, metavar="CHECKPOINT",
                   help="start a new run (the config's output_dir) from RUN/checkpoints/epoch_XXX "
                        "of another run: its epochs up to XXX, the config's settings after; only "
                        "the robust settings and later stages' loss weights may differ")
    p.add_argument("--stop-after-epoch", type=int, default=None, metavar="N",
                   help="checkpoint and exit after epoch N (0-based); continue later with --resume")
    p.add_argument("--cpu", action="store_true", help="train on the CPU even when a GPU is present")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                   help="config overrides, e.g. optim.lr=0.01 stages.0.epochs=2")
    return p.parse_args(argv)


def where_to_resume(run_dir: Path) -> str:
    """What a Ctrl-C leaves in ``run_dir``: the checkpoint ``--resume`` continues from, if any."""
    from fer_robust.engine.checkpoint import latest_checkpoint
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        return f"continue from {latest.name} with: tools/train.py --resume {run_dir}"
    if (run_dir / "config.yaml").is_file():
        return (f"no checkpoint was kept yet: tools/train.py --resume {run_dir} starts the run "
                "again from epoch 0")
    return f"no run was started in {run_dir}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("train"):
        if args.resume_inexact and args.resume is None:
            raise ConfigError("--resume-inexact goes with --resume")
        if args.branch_from is not None and args.resume is not None:
            raise ConfigError("--branch-from starts a new run; --resume continues one: pass one")
        if args.resume is not None:
            if args.resume:
                run_dir = Path(args.resume)
                if args.config is not None or args.overrides:
                    raise ConfigError("--resume RUN_DIR continues with the config saved in RUN_DIR; "
                                      "do not pass --config or overrides with it")
                if not (run_dir / "config.yaml").is_file():
                    raise ConfigError(f"--resume: {run_dir / 'config.yaml'} not found")
                cfg = load_config(run_dir / "config.yaml", [f"output_dir={run_dir}"])
            else:
                cfg = load_config(args.config, args.overrides)
        else:
            cfg = load_config(args.config, args.overrides)
        if args.branch_from is not None:
            from accelerate import PartialState

            from fer_robust.engine.branching import make_branch, plan_branch
            from fer_robust.engine.run_dir import hold_run_dir
            plan = plan_branch(args.branch_from, cfg)
            if PartialState().is_main_process:
                with hold_run_dir(cfg.output_dir):  # no other run writes there meanwhile
                    make_branch(plan)
            PartialState().wait_for_everyone()
        from fer_robust.engine.trainer import Trainer
        try:
            trainer = Trainer(cfg, resume=args.resume is not None or args.branch_from is not None,
                              cpu=args.cpu,
                              resume_inexact=args.resume_inexact).setup()
            record = trainer.fit(stop_after_epoch=args.stop_after_epoch)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(where_to_resume(Path(cfg.output_dir))) from None
        if trainer.best["epoch"] >= 0:
            kept = (f"best val accuracy {trainer.best['val_accuracy']:.4f} at epoch "
                    f"{trainer.best['epoch']}")
        else:
            kept = "no validation split: last epoch kept (last_model.safetensors)"
        trainer.accelerator.print(f"{kept}; run saved in {trainer.run_dir}")
        return record


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
