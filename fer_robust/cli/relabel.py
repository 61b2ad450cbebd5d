"""``tools/relabel.py``: what the split and the retrieval relabelling decide for each training image.

    python tools/relabel.py --checkpoint runs/demo_noisy --out runs/demo_noisy/relabel

Runs the per-sample pass, the class-dependent GMM split and the retrieval relabelling over the
training set with the given model (the same code the trainer's stages run) and writes:

- ``relabel.csv``: one row per training image: index, path, given label, clean probability,
  clean/noisy, the soft label per class, the new label (and the true label when it is known);
- ``summary.json``: clean ratio per class, how many labels would change and between which classes,
  the split's noise-detection scores when the true labels are known, and, for datasets with
  annotator votes (FERPlus), how close soft and given labels are to the human vote distribution;
- ``most_changed.png``: a grid of the images whose labels change most, with given and new labels.

Works under ``accelerate launch`` too: the pass is sharded and gathered by index, and the split and
the search run once on the main process, so the CSV is the same for any number of processes.
"""
from __future__ import annotations

import argparse
import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np

from fer_robust.cli.common import user_errors_exit


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory (best model), checkpoint folder or weights file")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--data-root", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grid", type=int, default=32, help="images in most_changed.png")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="robust.key=value",
                   help="override split/relabel settings, e.g. robust.relabel.k=100")
    return p.parse_args(argv)


def vote_agreement(soft: np.ndarray, given: np.ndarray, votes: np.ndarray,
                   majority: np.ndarray) -> dict:
    """How close soft labels and given labels are to the annotators' vote distribution."""
    from fer_robust.robust.metrics import total_variation_distance
    n, c = soft.shape
    vote_dist = votes / np.maximum(votes.sum(1, keepdims=True), 1e-12)
    given_onehot = np.eye(c, dtype=np.float32)[given]
    return {
        "tv_soft_to_votes": float(total_variation_distance(soft, vote_dist).mean()),
        "tv_given_to_votes": float(total_variation_distance(given_onehot, vote_dist).mean()),
        "argmax_agreement_soft_with_majority": float((soft.argmax(1) == majority).mean()),
        "argmax_agreement_given_with_majority": float((given == majority).mean()),
        "num_samples": int(n),
    }


def save_grid(dataset, indices: np.ndarray, given: np.ndarray, new: np.ndarray, conf: np.ndarray,
              class_names: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_robust.utils import atomic_path

    cols = 8
    rows = max(1, int(np.ceil(len(indices) / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.9), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        ax.imshow(dataset.load_image(int(i)))
        ax.set_title(f"{class_names[given[i]]}\n-> {class_names[new[i]]} {conf[i]:.2f}", fontsize=7)
    fig.suptitle("given -> new label (soft-label confidence)", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("relabel"):
        from fer_robust.data.loaders import build_eval_loader
        from fer_robust.data.noise import load_noisy_labels
        from fer_robust.data.registry import build_dataset
        from fer_robust.data.transforms import build_transform
        from fer_robust.engine.distributed import broadcast_object, build_accelerator
        from fer_robust.engine.inference import load_trained_model
        from fer_robust.robust.metrics import noise_detection_metrics, per_class_clean_ratio
        from fer_robust.robust.sample_pass import per_sample_pass
        from fer_robust.robust.selection import split_and_relabel
        from fer_robust.utils import atomic_path, atomic_write_json

        overrides = list(args.overrides)
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        cfg, model, class_names, run_dir = load_trained_model(args.checkpoint, overrides)
        dataset = build_dataset(cfg.data, "train", build_transform(cfg.data, train=False))
        true_labels = None
        noisy_file = run_dir / "noisy_labels.npz"
        if noisy_file.is_file():
            noisy, true_labels, _ = load_noisy_labels(noisy_file)
            dataset.set_targets(noisy)
        given = dataset.targets.copy()

        accelerator = build_accelerator(cfg.mixed_precision, cpu=args.cpu)
        loader = build_eval_loader(dataset, args.batch_size or cfg.optim.eval_batch_size,
                                   cfg.data.num_workers)
        model, loader = accelerator.prepare(model, loader)
        embed_dim = accelerator.unwrap_model(model).embed_dim
        result = per_sample_pass(model, loader, accelerator, len(dataset), len(class_names), embed_dim)
        decision = None
        if accelerator.is_main_process:
            decision = split_and_relabel(result.loss, result.embedding, given, len(class_names),
                                         cfg.robust.split, cfg.robust.relabel, relabel=True,
                                         probs=result.prob)
        decision = broadcast_object(accelerator, decision)
        if not accelerator.is_main_process:
            return {}

        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        soft, new = decision.soft_labels, decision.new_labels
        with atomic_path(out / "relabel.csv") as tmp, open(tmp, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "path", "given_label", "clean_prob", "status",
                        *[f"soft_{c}" for c in class_names], "new_label", "confidence"]
                       + (["true_label"] if true_labels is not None else []))
            for i in range(len(dataset)):
                row = [i, dataset.paths[i], class_names[given[i]], f"{decision.clean_prob[i]:.4f}",
                       "clean" if decision.clean_mask[i] else "noisy",
                       *[f"{v:.4f}" for v in soft[i]], class_names[new[i]],
                       f"{decision.confidence[i]:.4f}"]
                if true_labels is not None:
                    row.append(class_names[true_labels[i]])
                w.writerow(row)

        changed = new != given
        transitions = Counter(f"{class_names[a]} -> {class_names[b]}"
                              for a, b in zip(given[changed], new[changed]))
        summary = {
            "checkpoint": str(args.checkpoint),
            "num_samples": int(len(dataset)),
            "clean_ratio": float(decision.clean_mask.mean()),
            "clean_ratio_per_class": dict(zip(class_names, map(float, per_class_clean_ratio(
                decision.clean_mask, given, len(class_names))))),
            "num_noisy": int((~decision.clean_mask).sum()),
            "num_label_changes": int(changed.sum()),
            "label_changes": dict(transitions.most_common()),
        }
        if true_labels is not None:
            is_changed = given != true_labels
            summary["noise_detection"] = noise_detection_metrics(
                decision.clean_prob, is_changed, cfg.robust.split.threshold)
            rel = decision.relabeled_mask
            summary["relabel_accuracy"] = float((new[rel] == true_labels[rel]).mean()) if rel.any() else None
        if dataset.votes is not None:
            majority = dataset.clean_targets
            summary["votes_all"] = vote_agreement(soft, given, dataset.votes, majority)
            rel = decision.relabeled_mask
            if rel.any():
                summary["votes_relabeled"] = vote_agreement(soft[rel], given[rel], dataset.votes[rel],
                                                            majority[rel])
        atomic_write_json(out / "summary.json", summary)

        # Images whose labels change most: probability mass moved away from the given label.
        moved = 1.0 - soft[np.arange(len(given)), given]
        order = np.argsort(-moved, kind="stable")
        order = order[moved[order] > 0][: args.grid]
        if order.size:
            save_grid(dataset, order, given, new, decision.confidence, class_names,
                      out / "most_changed.png")
        print(json.dumps({k: summary[k] for k in ("num_samples", "clean_ratio", "num_noisy",
                                                  "num_label_changes")}))
        print(f"wrote {out / 'relabel.csv'}, {out / 'summary.json'}"
              + (f", {out / 'most_changed.png'}" if order.size else ""))
        return summary


if __name__ == "__main__":
    main()
