"""``tools/relabel.py``: what the split and the retrieval relabelling decide for each training image.

    python tools/relabel.py --checkpoint runs/demo_noisy --out runs/demo_noisy/relabel

Runs the per-sample pass, the class-dependent GMM split and the retrieval relabelling over the
training set with the given model (the same code the trainer's stages run) and writes:

- ``relabel.csv``: one row per training image: index, path, given label, clean probability,
  clean/noisy, the soft label per class, the new label (the given one unless the image is
  relabelled), the soft label's confidence (and the true label when it is known);
- ``summary.json``: clean ratio per class, how many labels would change and between which classes,
  the split's noise-detection scores when the true labels are known, and, for datasets with
  annotator votes (FERPlus), how close training targets and given labels are to the human vote
  distribution (the figures of :func:`fer_robust.robust.metrics.decision_figures`, as training
  logs them);
- ``most_changed.png``: a grid of the images whose labels change most, with given and new labels;
- with ``--html``, ``report.html``: one self-contained page (images embedded, plain JavaScript, no
  server) of the images the split flags as noisy, per given class, each with its given label, soft
  label (a bar chart), new label, clean probability and, for FERPlus, the annotators' votes;
  sortable by clean probability and filterable by class and by given -> new label
  (:mod:`fer_robust.robust.relabel_report`).

The decision is training's: :func:`fer_robust.robust.selection.split_and_relabel` with the run's
``robust`` settings, so the confidence floor (``robust.relabel.min_confidence``) and the
loss-history window (``robust.split.loss_window``) apply as in training. With a window the split
averages each image's loss over this pass and the earlier passes, whose losses the trainer saves
with every checkpoint (``loss_history.*`` in ``trainer_state.safetensors``): the tool reads them
from the checkpoint saved with the model it runs (:func:`~fer_robust.engine.inference.
checkpoint_of_weights`). On ``--checkpoint RUN/checkpoints/epoch_XXX`` it therefore makes exactly
the decision training makes at the start of epoch XXX+1 (``samples/epoch_{XXX+1}.npz``) when that
is a robust epoch. When no checkpoint holds the model (a pruned best epoch) the split fits on this
pass alone, and the tool says so. With ``robust.teacher_ema`` the pass reads the moving average
kept in that checkpoint, as training's pass did (:mod:`fer_robust.engine.teacher`). With
``robust.noise_gate`` the tool reads the run's noise reading from the same checkpoint (a
checkpoint from before the first robust pass has none: this pass's estimate is then the reading,
as it was for training's first robust pass); when the reading is below the gate's threshold every
image stays clean at its given label, as in training, and ``summary.json`` says so.

Works under ``accelerate launch`` too: the pass is sharded and gathered by index, and the split and
the search run once on the main process, so the CSV is the same for any number of processes.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from accelerate import Accelerator

from fer_robust.cli.common import tool_entry, user_errors_exit
from fer_robust.config import Config, ConfigError
from fer_robust.data.base import FERDataset
from fer_robust.data.loaders import build_eval_loader
from fer_robust.data.noise import load_noisy_labels
from fer_robust.data.registry import build_dataset
from fer_robust.data.transforms import build_transform
from fer_robust.engine.checkpoint import load_trainer_tensors
from fer_robust.engine.distributed import build_accelerator, run_on_main
from fer_robust.engine.evaluation import per_sample_pass
from fer_robust.engine.teacher import TEACHER_PREFIX
from fer_robust.engine.inference import (checkpoint_of_weights, load_trained_model,
                                         resolve_checkpoint)
from fer_robust.robust.gmm_split import LossHistory
from fer_robust.robust.metrics import decision_figures
from fer_robust.robust.noise_rate import NoiseGate
from fer_robust.robust.selection import RobustDecision, split_and_relabel
from fer_robust.utils import atomic_path, atomic_write_json, writable_folder


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, type=Path,
                   help="run directory (best model), checkpoint folder or weights file")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--data-root", default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grid", type=int, default=32, help="images in most_changed.png")
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--html", action="store_true",
                   help="also write report.html: the flagged images, filterable, self-contained")
    p.add_argument("--html-max-per-class", type=int, default=0,
                   help="at most this many images per class in report.html, lowest clean "
                        "probability first (0: all)")
    p.add_argument("overrides", nargs="*", metavar="robust.key=value",
                   help="override split/relabel settings, e.g. robust.relabel.k=100")
    return p.parse_args(argv)


def save_grid(dataset, indices: np.ndarray, given: np.ndarray, new: np.ndarray, conf: np.ndarray,
              class_names: list[str], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def training_split(cfg: Config, run_dir: Path) -> tuple[FERDataset, np.ndarray | None]:
    """The run's training split with evaluation transforms and the labels training was given
    (the run's ``noisy_labels.npz`` when noise was injected), and the true labels or None."""
    dataset = build_dataset(cfg.data, "train", build_transform(cfg.data, train=False))
    true_labels = None
    noisy_file = run_dir / "noisy_labels.npz"
    if noisy_file.is_file():
        noisy, true_labels, _ = load_noisy_labels(noisy_file)
        dataset.set_targets(noisy)
    return dataset, true_labels


def earlier_losses(cfg: Config, run_dir: Path, weights: Path, num_samples: int
                   ) -> tuple[LossHistory, dict | None]:
    """The loss history training had when it saved ``weights``: the earlier passes' losses of
    the checkpoint saved with that model (see the module docstring). Returns the history and, with
    a window, a note on where it came from (for ``summary.json``)."""
    window = cfg.robust.split.loss_window
    history = LossHistory(num_samples, window)
    if window == 1:  # the split fits on this pass alone
        return history, None
    folder = checkpoint_of_weights(run_dir, weights)
    if folder is None:
        print(f"relabel: no checkpoint of {weights.name} is kept, so robust.split.loss_window="
              f"{window} averages this pass alone (training also averaged the earlier passes)",
              file=sys.stderr)
        return history, {"window": window, "earlier_passes": 0, "checkpoint": None}
    history.load_state_dict({"losses": load_trainer_tensors(folder, "loss_history.")["losses"]
                             .numpy()})
    return history, {"window": window, "earlier_passes": min(len(history), window - 1),
                     "checkpoint": str(folder)}


def run_noise_gate(cfg: Config, run_dir: Path, weights: Path) -> NoiseGate:
    """The run's noise gate as training had it when it saved ``weights``: its reading from the
    checkpoint saved with that model, or none yet (see the module docstring)."""
    gate = NoiseGate(cfg.robust.noise_gate.threshold, cfg.robust.noise_gate.anchor_quantile)
    folder = checkpoint_of_weights(run_dir, weights)
    if folder is not None:
        gate.load_state_dict(load_trainer_tensors(folder, "noise_gate."))
    elif cfg.robust.noise_gate.threshold > 0:
        print(f"relabel: no checkpoint of {weights.name} is kept, so robust.noise_gate reads this "
              "pass's estimate (training read its first robust pass's)", file=sys.stderr)
    return gate


def pass_model(cfg: Config, run_dir: Path, weights: Path, model) -> tuple[object, dict]:
    """The model training's pass read: with ``robust.teacher_ema`` the moving average saved in the
    checkpoint of ``weights`` (see :mod:`fer_robust.engine.teacher`), loaded into ``model``;
    otherwise ``model``. Returns it and what ``summary.json`` records of it (with a teacher,
    ``pass_teacher``: the checkpoint read, or None)."""
    if cfg.robust.teacher_ema <= 0:
        return model, {}
    folder = checkpoint_of_weights(run_dir, weights)
    state = load_trainer_tensors(folder, TEACHER_PREFIX) if folder is not None else {}
    if not state:
        print(f"relabel: no moving average (robust.teacher_ema) is kept with {weights.name}, so "
              "the pass reads the trained model (training's pass read the average)",
              file=sys.stderr)
        return model, {"pass_teacher": None}
    model.load_state_dict(state)
    return model, {"pass_teacher": str(folder)}


def decide(model, dataset: FERDataset, cfg: Config, history: LossHistory, accelerator: Accelerator,
           batch_size: int | None, num_classes: int,
           noise_gate: NoiseGate | None = None) -> RobustDecision:
    """The per-sample pass (every process), then training's decision (once, on the main
    process), on every process."""
    loader = build_eval_loader(dataset, batch_size or cfg.optim.eval_batch_size,
                               cfg.data.num_workers)
    model, loader = accelerator.prepare(model, loader)
    result = per_sample_pass(model, loader, accelerator, hflip=cfg.robust.pass_hflip)
    return run_on_main(accelerator, lambda: split_and_relabel(
        result.loss, result.embedding, dataset.targets.copy(), num_classes, cfg.robust.split,
        cfg.robust.relabel, relabel=True, probs=result.prob, history=history,
        noise_gate=noise_gate))


def write_csv(path: Path, dataset: FERDataset, decision: RobustDecision, class_names: list[str],
              true_labels: np.ndarray | None) -> None:
    """``relabel.csv``: one row per training image (see the module docstring)."""
    given = dataset.targets
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "path", "given_label", "clean_prob", "status",
                    *[f"soft_{c}" for c in class_names], "new_label", "confidence"]
                   + (["true_label"] if true_labels is not None else []))
        for i in range(len(dataset)):
            row = [i, dataset.paths[i], class_names[given[i]], f"{decision.clean_prob[i]:.4f}",
                   "clean" if decision.clean_mask[i] else "noisy",
                   *[f"{v:.4f}" for v in decision.soft_labels[i]],
                   class_names[decision.new_labels[i]], f"{decision.confidence[i]:.4f}"]
            if true_labels is not None:
                row.append(class_names[true_labels[i]])
            w.writerow(row)


def summarize(decision: RobustDecision, dataset: FERDataset, true_labels: np.ndarray | None,
              class_names: list[str]) -> dict:
    """``summary.json``'s figures: :func:`~fer_robust.robust.metrics.decision_figures` under the
    tool's names, and which labels change between which classes."""
    given, new = dataset.targets, decision.new_labels
    figures = decision_figures(decision, given, len(class_names), true_labels, votes=dataset.votes,
                               majority_labels=dataset.clean_targets)
    changed = new != given
    transitions = Counter(f"{class_names[a]} -> {class_names[b]}"
                          for a, b in zip(given[changed], new[changed]))
    summary = {
        "num_samples": int(len(dataset)),
        "clean_ratio": figures["clean_ratio"],
        "clean_ratio_per_class": dict(zip(class_names, figures["clean_ratio_per_class"])),
        "num_noisy": figures["num_noisy"],
        "num_relabeled": figures["num_relabeled"],
        "num_label_changes": figures["num_label_changes"],
        "label_changes": dict(transitions.most_common()),
    }
    if true_labels is not None:
        detection = {k[len("split_"):]: v for k, v in figures.items() if k.startswith("split_")}
        if detection:
            summary["noise_detection"] = detection
        summary["relabel_accuracy"] = figures.get("relabel_accuracy")
    for key in ("votes_all", "votes_relabeled"):
        if key in figures:
            summary[key] = figures[key]
    return summary


def most_changed(decision: RobustDecision, given: np.ndarray, count: int) -> np.ndarray:
    """Indices of up to ``count`` images whose label changes most: the probability mass their
    target moved away from the given label, largest first."""
    moved = 1.0 - decision.targets[np.arange(len(given)), given]
    order = np.argsort(-moved, kind="stable")
    return order[moved[order] > 0][:count]


def main(argv=None) -> dict:
    args = parse_args(argv)
    with user_errors_exit("relabel"):
        overrides = list(args.overrides)
        if args.data_root:
            overrides.append(f"data.root={args.data_root}")
        run_dir, weights = resolve_checkpoint(args.checkpoint)
        writable_folder(args.out, "--out folder")  # before the pass, not after it
        cfg, model, class_names, _ = load_trained_model(args.checkpoint, overrides)
        if cfg.method.name != "staged":
            raise ConfigError(f"{run_dir} was trained by method {cfg.method.name!r}: this tool "
                              "shows the staged system's split and retrieval relabelling; a "
                              "peer's own per-sample record is in its samples/epoch_XXX.npz")
        dataset, true_labels = training_split(cfg, run_dir)
        history, history_note = earlier_losses(cfg, run_dir, weights, len(dataset))
        model, teacher_note = pass_model(cfg, run_dir, weights, model)
        gate = run_noise_gate(cfg, run_dir, weights)
        accelerator = build_accelerator(cfg.mixed_precision, cpu=args.cpu)
        decision = decide(model, dataset, cfg, history, accelerator, args.batch_size,
                          len(class_names), noise_gate=gate)
        if not accelerator.is_main_process:
            return {}

        out = args.out
        out.mkdir(parents=True, exist_ok=True)
        write_csv(out / "relabel.csv", dataset, decision, class_names, true_labels)
        summary = {"checkpoint": str(args.checkpoint),
                   **summarize(decision, dataset, true_labels, class_names)}
        if history_note is not None:
            summary["loss_history"] = history_note
        summary.update(teacher_note)
        summary["noise_gate"] = {"threshold": gate.threshold,
                                 "run_estimate": gate.first_estimate,
                                 "this_pass_estimate": decision.noise_rate_estimate,
                                 "labels_taken_as_clean": decision.labels_taken_as_clean}
        atomic_write_json(out / "summary.json", summary)
        shown = most_changed(decision, dataset.targets, args.grid)
        if shown.size:
            save_grid(dataset, shown, dataset.targets, decision.new_labels, decision.confidence,
                      class_names, out / "most_changed.png")
        written = [out / "relabel.csv", out / "summary.json"]
        if shown.size:
            written.append(out / "most_changed.png")
        if args.html:
            from fer_robust.robust.relabel_report import write_relabel_report
            written.append(write_relabel_report(
                out / "report.html", dataset, decision, class_names, true_labels,
                title=f"relabel: {args.checkpoint}", max_per_class=args.html_max_per_class))
        print(json.dumps({k: summary[k] for k in ("num_samples", "clean_ratio", "num_noisy",
                                                  "num_label_changes")}))
        print("wrote " + ", ".join(map(str, written)))
        return summary


entry_point = tool_entry(main)

if __name__ == "__main__":
    sys.exit(entry_point())
