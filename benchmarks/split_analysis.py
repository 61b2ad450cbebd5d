"""How well could the split have found the changed labels of a finished noisy run?

    python benchmarks/split_analysis.py runs/benchmark_ferplus_full/runs/sym30-full
    python benchmarks/split_analysis.py runs/benchmark_ferplus_full/runs/sym30-full --epoch 10
    python benchmarks/split_analysis.py runs/benchmark_ferplus_data/runs/annotator-full --epoch 12 \
        --name data-annotator-full

Reads one per-sample state of the run (``samples/epoch_XXX.npz``, the last one unless ``--epoch``
names another: the pass the split saw, the given and the true labels) and re-runs the split on the
same values with other settings. Prints, and saves to
``benchmarks/results/split_analysis_<name>_epoch_XXX.json`` (``--out``; the name is the run
directory's unless ``--name``):

- the noise gate's reading of this pass (``robust.noise_gate``): the anchor-point estimate of the
  share of wrong labels at the run's quantile and at the 90th to 99th percentile, beside the true
  share, and whether the gate, reading this pass first, takes the labels as clean;
- precision / recall / F1 / AUC of the per-class and of the global GMM, fitted on what the run's
  split fits on (``robust.split.loss``: the pass's cross-entropy or its class-relative form);
- the F1 of the best single threshold on the cross-entropy and on the split's values, chosen with
  the true labels: an upper bound for any split that reads this pass one value per image;
- the model's accuracy against the true labels, on all training images and on the changed ones
  (what bounds detection, and relabelling from this model);
- per given class: its size, its share of changed labels, the share the split flagged, the loss AUC;
- for relabelled samples (all, and the changed ones): how often the soft label and the model's own
  prediction put the true label on top.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from fer_robust.provenance import provenance, repo_relative
from fer_robust.validation import load_config
from fer_robust.robust.gmm_split import class_dependent_split, split_losses
from fer_robust.robust.metrics import noise_detection_metrics, relabel_accuracy
from fer_robust.robust.noise_rate import NoiseGate, estimate_noise_rate
from fer_robust.utils import atomic_write_json, json_safe

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--epoch", type=int, default=None,
                   help="the pass of this epoch (default: the run's last saved pass)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON")
    p.add_argument("--name", default=None,
                   help="the run's name in the JSON's file name (default: the run directory's)")
    args = p.parse_args(argv)
    cfg = load_config(args.run_dir / "config.yaml")
    files = sorted((args.run_dir / "samples").glob("epoch_*.npz"), key=lambda f: int(f.stem[6:]))
    if args.epoch is not None:
        files = [f for f in files if int(f.stem[6:]) == args.epoch]
    if not files:
        raise SystemExit(f"{args.run_dir}/samples holds no per-sample state"
                         + (f" of epoch {args.epoch}" if args.epoch is not None else
                            " (not a robust run?)"))
    z = np.load(files[-1])
    if "true_labels" not in z.files:
        raise SystemExit(f"{files[-1]}: no true labels (a run without injected noise)")
    given, true, loss, pred = z["given_labels"], z["true_labels"], z["loss"], z["pred"]
    changed = given != true
    fitted = split_losses(loss, z["prob"] if "prob" in z.files else None, given, cfg.robust.split)
    num_classes = z["soft_labels"].shape[1]

    def scores(clean_prob):
        m = noise_detection_metrics(clean_prob, changed, cfg.robust.split.threshold)
        return {k: round(float(m[k]), 4) for k in ("precision", "recall", "f1", "auc")}

    def best_threshold_f1(values):
        precision, recall, _ = precision_recall_curve(changed, values)
        return float((2 * precision * recall / np.maximum(precision + recall, 1e-12)).max())

    out: dict = {"provenance": provenance(argv, __file__, cpu=True),
                 "run": repo_relative(args.run_dir), "epoch_file": files[-1].name,
                 "noise_rate": float(changed.mean()), "split_fits": cfg.robust.split.loss,
                 "model_accuracy_on_true_labels": float((pred == true).mean()),
                 "model_accuracy_on_changed_true_labels": float((pred[changed] == true[changed]).mean())}
    if "prob" in z.files:
        # The run's gate, reading this pass as its first.
        gate = NoiseGate(cfg.robust.noise_gate.threshold, cfg.robust.noise_gate.anchor_quantile)
        out["noise_gate"] = {
            "threshold": gate.threshold, "anchor_quantile": gate.quantile,
            "estimate": gate.observe(z["prob"], given),
            "estimate_by_quantile": {str(q): estimate_noise_rate(z["prob"], given, q)
                                     for q in (0.9, 0.95, 0.97, 0.99)},
            "labels_taken_as_clean": gate.labels_look_clean}
    for scope in ("class", "global"):
        split = class_dependent_split(fitted, given, num_classes,
                                      replace(cfg.robust.split, scope=scope))
        out[f"split_{scope}"] = {**scores(split.clean_prob),
                                 "flagged": float((~split.clean_mask).mean())}
    out["best_loss_threshold_f1"] = best_threshold_f1(loss)
    out["best_split_value_threshold_f1"] = best_threshold_f1(fitted)
    out["loss_auc"] = float(roc_auc_score(changed, loss))
    out["split_value_auc"] = float(roc_auc_score(changed, fitted))
    per_class = []
    for c in range(num_classes):
        m = given == c
        both = 0 < changed[m].sum() < m.sum()
        per_class.append({"class": c, "size": int(m.sum()), "changed": float(changed[m].mean()),
                          "flagged_by_run": float((~z["clean_mask"][m]).mean()),
                          "loss_auc": float(roc_auc_score(changed[m], loss[m])) if both else None})
    out["per_class"] = per_class
    for name, rel in (("relabelled", z["relabeled_mask"]),
                      ("relabelled_changed", z["relabeled_mask"] & changed)):
        if rel.any():
            out[name] = {"count": int(rel.sum()),
                         "soft_label_top1": relabel_accuracy(z["soft_labels"][rel], true[rel]),
                         "model_prediction_top1": float((pred[rel] == true[rel]).mean())}
    print(json.dumps(json_safe(out), indent=1))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"split_analysis_{args.name or args.run_dir.name}_{files[-1].stem}.json"
    atomic_write_json(path, json_safe(out))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
