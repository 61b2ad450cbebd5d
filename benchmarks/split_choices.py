"""What each split and relabelling setting would decide from one checkpoint of a noisy run.

    python benchmarks/split_choices.py runs/benchmark_ferplus_full/runs/sym30-full/checkpoints/epoch_009

Runs the per-sample pass of the checkpoint's model over its run's training split (with the given,
noisy labels), plain and mirrored, then makes the robust decision of
:func:`fer_robust.robust.selection.split_and_relabel` with each setting below on those same
arrays, and prints and saves (``benchmarks/results/split_choices_<run>_<epoch>.json``) per setting:

- the share flagged noisy, and precision / recall / F1 at finding the changed labels;
- per true class, the share of its clean (unchanged) images that the split keeps;
- ``targets_right``: the share of all training images whose training target (given label where
  clean, soft label where relabelled) has the true label on top, beside the same share for the
  given labels;
- the share of relabelled images whose retrieval soft label alone has the true label on top,
  under each AP normalisation (``robust.relabel.ap_normalization``);
- with annotator votes, the mean total-variation distance of the targets to the vote distribution.

The true labels are read for the figures only; every decision is made without them.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from fer_robust.cli.relabel import training_split
from fer_robust.data.loaders import build_eval_loader
from fer_robust.engine.evaluation import per_sample_pass
from fer_robust.engine.inference import load_trained_model
from fer_robust.provenance import provenance, repo_relative
from fer_robust.robust.metrics import decision_figures
from fer_robust.robust.selection import split_and_relabel
from fer_robust.utils import atomic_write_json, json_safe

RESULTS = Path(__file__).resolve().parent / "results"

# name -> (mirrored pass, robust.split.loss)
SPLITS = {
    "cross-entropy": (False, "ce"),
    "cross-entropy, mirrored pass": (True, "ce"),
    "class-relative, mirrored pass": (True, "class_relative"),
}


def decide(arrays, given, cfg, split_loss: str, **relabel):
    split_cfg = dataclasses.replace(cfg.robust.split, loss=split_loss)
    relabel_cfg = dataclasses.replace(cfg.robust.relabel, **relabel)
    return split_and_relabel(arrays.loss, arrays.embedding, given, arrays.prob.shape[1], split_cfg,
                             relabel_cfg, probs=arrays.prob)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="a checkpoint folder (or run) of a noisy run")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    args = p.parse_args(argv)
    cfg, model, class_names, run_dir = load_trained_model(args.checkpoint)
    dataset, true = training_split(cfg, run_dir)
    if true is None:
        raise SystemExit(f"{run_dir}: no noisy_labels.npz, so no true labels to score against")
    given = dataset.targets.copy()
    accelerator = Accelerator(cpu=True)
    model, loader = accelerator.prepare(model, build_eval_loader(dataset, args.batch_size, 0))
    passes = {hflip: per_sample_pass(model, loader, accelerator, progress=False, hflip=hflip)
              for hflip in (False, True)}
    num_classes = len(class_names)
    changed = given != true
    out: dict = {"provenance": provenance(argv, __file__, cpu=True),
                 "checkpoint": repo_relative(args.checkpoint), "class_names": class_names,
                 "given_right": float((~changed).mean()), "settings": {}}
    for name, (hflip, split_loss) in SPLITS.items():
        arrays = passes[hflip]
        decision = decide(arrays, given, cfg, split_loss)
        figures = decision_figures(decision, given, num_classes, true, votes=dataset.votes)
        kept = [float((decision.clean_mask & ~changed & (true == c)).sum()
                      / max((~changed & (true == c)).sum(), 1)) for c in range(num_classes)]
        row = {"flagged": float((~decision.clean_mask).mean()),
               **{k: figures.get(f"split_{k}") for k in ("precision", "recall", "f1")},
               "clean_kept_per_class": kept,
               "targets_right": float((decision.targets.argmax(1) == true).mean())}
        for norm in ("hits", "list"):
            retrieval = decide(arrays, given, cfg, split_loss, ap_normalization=norm,
                               model_weight=0.0, mix_given=False)
            rel = retrieval.relabeled_mask
            row[f"retrieval_top1_{norm}"] = float((retrieval.new_labels[rel] == true[rel]).mean())
            row[f"retrieval_top1_changed_{norm}"] = float(
                (retrieval.new_labels[rel & changed] == true[rel & changed]).mean())
        if "votes_all" in figures:
            row["tv_targets_to_votes"] = figures["votes_all"]["tv_soft_to_votes"]
            row["tv_given_to_votes"] = figures["votes_all"]["tv_given_to_votes"]
        out["settings"][name] = row
        print(f"{name:32s} flagged {row['flagged']:.2f}  P/R/F1 {row['precision']:.3f} "
              f"{row['recall']:.3f} {row['f1']:.3f}  kept {np.round(kept, 2)}  targets right "
              f"{row['targets_right']:.3f} (given {out['given_right']:.3f})  retrieval top-1 "
              f"hits {row['retrieval_top1_hits']:.4f} list {row['retrieval_top1_list']:.4f}")
    name = f"split_choices_{run_dir.name}_{Path(args.checkpoint).name}.json"
    atomic_write_json(args.out / name, json_safe(out))
    print(f"wrote {args.out / name}")
    return out


if __name__ == "__main__":
    main()
