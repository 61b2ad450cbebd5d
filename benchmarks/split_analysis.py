"""How well could the split have found the changed labels of a finished noisy run?

    python benchmarks/split_analysis.py runs/benchmark_ferplus_full/runs/sym30-full

Reads the run's last per-sample state (``samples/epoch_XXX.npz``: the losses the split saw, the
given and the true labels) and re-runs the split on those same losses with other settings. Prints,
and saves to ``benchmarks/results/split_analysis_<run>.json``:

- precision / recall / F1 / AUC of the per-class GMM (the run's own), of one global GMM, and of the
  best single loss threshold chosen with the true labels (an upper bound for any loss threshold);
- the model's accuracy on the training images against their true labels (what bounds detection);
- per given class: its size, its share of changed labels, the share the split flagged, the loss AUC;
- for relabelled changed samples: how often the retrieval soft label and the model's own prediction
  put the true label on top.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_auc_score

from fer_robust.config import load_config
from fer_robust.robust.gmm_split import class_dependent_split
from fer_robust.robust.metrics import noise_detection_metrics
from fer_robust.utils import atomic_write_json, json_safe

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path)
    args = p.parse_args(argv)
    cfg = load_config(args.run_dir / "config.yaml")
    files = sorted((args.run_dir / "samples").glob("epoch_*.npz"), key=lambda f: int(f.stem[6:]))
    if not files:
        raise SystemExit(f"{args.run_dir}/samples holds no per-sample state (not a robust run?)")
    z = np.load(files[-1])
    if "true_labels" not in z.files:
        raise SystemExit(f"{files[-1]}: no true labels (a run without injected noise)")
    given, true, loss, pred = z["given_labels"], z["true_labels"], z["loss"], z["pred"]
    changed = given != true
    num_classes = z["soft_labels"].shape[1]

    def scores(clean_prob):
        m = noise_detection_metrics(clean_prob, changed, cfg.robust.split.threshold)
        return {k: round(float(m[k]), 4) for k in ("precision", "recall", "f1", "auc")}

    out: dict = {"run": str(args.run_dir), "epoch_file": files[-1].name,
                 "noise_rate": float(changed.mean()),
                 "model_accuracy_on_true_labels": float((pred == true).mean())}
    for scope in ("class", "global"):
        split = class_dependent_split(loss, given, num_classes, replace(cfg.robust.split, scope=scope))
        out[f"split_{scope}"] = {**scores(split.clean_prob),
                                 "flagged": float((~split.clean_mask).mean())}
    precision, recall, _ = precision_recall_curve(changed, loss)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    out["best_loss_threshold_f1"] = float(f1.max())
    out["loss_auc"] = float(roc_auc_score(changed, loss))
    per_class = []
    for c in range(num_classes):
        m = given == c
        both = 0 < changed[m].sum() < m.sum()
        per_class.append({"class": c, "size": int(m.sum()), "changed": float(changed[m].mean()),
                          "flagged_by_run": float((~z["clean_mask"][m]).mean()),
                          "loss_auc": float(roc_auc_score(changed[m], loss[m])) if both else None})
    out["per_class"] = per_class
    rel = z["relabeled_mask"] & changed
    if rel.any():
        out["relabelled_changed"] = int(rel.sum())
        out["soft_label_top1"] = float((z["soft_labels"][rel].argmax(1) == true[rel]).mean())
        out["model_prediction_top1"] = float((pred[rel] == true[rel]).mean())
    print(json.dumps(json_safe(out), indent=1))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"split_analysis_{args.run_dir.name}.json"
    atomic_write_json(path, json_safe(out))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
