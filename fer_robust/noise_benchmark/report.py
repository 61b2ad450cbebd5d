"""Figures of the noise benchmark: what one finished training reached, and the comparison table.

:func:`summarize_run` reads only what the trainer wrote to a run directory (``metrics.jsonl``, the
last ``samples/epoch_XXX.npz``) plus the training split's annotator votes, so a summary can be
recomputed at any time from the files; the figures of the last robust decision come from
:func:`fer_robust.robust.metrics.decision_figures`, the function training logs them with.
:func:`compare` derives the targets of the benchmark (damage recovered, margins over the baseline)
and :func:`render_markdown` writes the table.

Definitions (the positive class is "noisy" = the given label differs from the majority label):

- ``val_accuracy``: the last epoch's validation accuracy (the model the run ends with; no selection
  on validation), ``best_val_accuracy`` and ``best_epoch`` beside it for reference.
- ``train_accuracy_given``: share of the training split predicted as its given label, and
  ``memorised_share``: share of the changed-label training images predicted as their wrong given
  label; both from the eval-mode pass after the last epoch (``final_fit.json``).
- ``split_*``: precision / recall / F1 / ROC-AUC of the last GMM split at finding changed labels.
- ``relabel_top1``: share of relabelled samples whose soft label's argmax is the majority label;
  ``relabel_top1_changed``: the same over relabelled samples whose given label was changed;
  ``relabel_precision``: share of relabelled samples whose given label was changed (relabelling
  touched a noisy label).
- For SCN (a hard relabelling: ``train_labels`` in its last ``samples/epoch_XXX.npz``), a sample is
  relabelled when the label it trains on at the end differs from its given label; ``relabel_top1``
  (its relabel accuracy) is the share of them whose new label is the majority label,
  ``relabel_precision`` the share whose given label was changed, ``changed_relabeled_share`` the
  share of the changed labels it relabelled, and ``train_label_accuracy`` the share of training
  labels that are the majority label after its relabelling (see
  :func:`~fer_robust.robust.metrics.hard_relabel_figures`). It has no split and no soft labels.
- ``tv_soft_to_votes`` / ``tv_given_to_votes``: mean total-variation distance to the 10-tagger vote
  distribution of the relabelled samples' soft labels, against that of their given labels;
  ``tv_targets_to_votes_all`` / ``tv_given_to_votes_all``: the same over the whole training split
  with each sample's training target (its soft label if relabelled, else its given label).
- ``seconds_per_epoch``: mean wall time of an epoch, per-sample pass, split, relabelling and
  validation included; ``seconds_per_robust_epoch`` the same over the self-paced and
  semi-supervised epochs only. The time target compares the full system's robust epoch (its most
  expensive one) with the baseline's epoch.

With ``robust.relabel.mix_given`` the reported soft label is the training target (retrieval soft
label mixed with the given label by the clean probability), so ``relabel_top1`` and the vote
distances describe what training actually used. The vote-distribution reference (``votes``, which
trains on the normalised votes themselves) reports ``tv_targets_to_votes_all`` of those targets:
0 by construction.

The comparison of runs (margins, seeds, one tagger against ten, targets) is
:mod:`fer_robust.noise_benchmark.comparison`.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from fer_robust.config import ConfigError
from fer_robust.methods.votes import vote_distributions
from fer_robust.noise_benchmark.comparison import _STRICT, _get
from fer_robust.noise_benchmark.recipe import parse_run_name
from fer_robust.robust.metrics import decision_figures, hard_relabel_figures, vote_figures
from fer_robust.robust.selection import RobustDecision

__all__ = ["summarize_run", "render_markdown", "plot_setting_curves"]



def _read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _last_sample_state(run_dir: Path) -> dict[str, np.ndarray] | None:
    files = sorted((run_dir / "samples").glob("epoch_*.npz"), key=lambda f: int(f.stem.split("_")[1]))
    if not files:
        return None
    with np.load(files[-1]) as z:
        return {k: z[k] for k in z.files}


# The figures of :func:`~fer_robust.robust.metrics.decision_figures` a run's summary keeps (besides
# every ``split_*``), under the same names.
_RUN_FIGURES = ("clean_ratio", "num_relabeled", "relabel_top1", "relabel_top1_changed",
                "relabel_precision", "changed_relabeled_share", "noise_rate")
# And the figures of a hard relabelling (SCN) a run's summary keeps.
_HARD_RELABEL_FIGURES = ("num_relabeled", "relabel_top1", "relabel_top1_changed",
                         "relabel_precision", "changed_relabeled_share", "train_label_accuracy",
                         "noise_rate")


def summarize_run(run_dir: str | Path, given_labels: np.ndarray, true_labels: np.ndarray | None,
                  votes: np.ndarray | None, num_classes: int, method: str = "staged") -> dict:
    """The benchmark's figures for one finished training (see the module docstring).

    Args:
        run_dir: the training's run directory.
        given_labels: ``(N,)`` labels training was given (noisy where noise was injected).
        true_labels: ``(N,)`` majority labels (equal to ``given_labels`` in the clean setting), or
            ``None`` when unknown.
        votes: ``(N, C)`` annotator vote counts of the training split, or ``None``.
        num_classes: C.
        method: the run's ``method.name``: ``scn`` reads its hard relabelling from the last sample
            state; the others' sample state is a robust decision (split, soft labels), if any.

    Split figures are given only when some labels were changed; relabelling figures whenever the
    true labels are known (in the clean setting every relabelled sample had a correct label).
    """
    run_dir = Path(run_dir)
    records = _read_metrics(run_dir)
    if not records:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'} holds no epoch")
    seconds = [r["epoch_seconds"] for r in records]
    robust_seconds = [r["epoch_seconds"] for r in records if r["kind"] != "warmup"]
    best = max(records, key=lambda r: r["val_accuracy"])
    out: dict = {
        "epochs": len(records),
        "val_accuracy": records[-1]["val_accuracy"],
        "val_mean_class_accuracy": records[-1]["val_mean_class_accuracy"],
        "best_val_accuracy": best["val_accuracy"],
        "best_epoch": best["epoch"],
        "seconds_per_epoch": float(np.mean(seconds)),
        "seconds_per_robust_epoch": float(np.mean(robust_seconds)) if robust_seconds else None,
        "train_seconds": float(np.sum(seconds)),
        # Per-epoch curves, so the figures (and the plots) survive without the run directory.
        "curves": {key: [r.get(key) for r in records]
                   for key in ("epoch", "val_accuracy", "train_accuracy_given", "memorised_share")},
    }
    final_fit = run_dir / "final_fit.json"
    if final_fit.is_file():
        fit = json.loads(final_fit.read_text())
        out["train_accuracy_given"] = fit.get("final_train_accuracy_given")
        out["memorised_share"] = fit.get("final_memorised_share")
    n = len(given_labels)
    for name, arr in (("true labels", true_labels), ("votes", votes)):
        if arr is not None and len(arr) != n:
            raise ConfigError(f"{run_dir}: {name} cover {len(arr)} samples, the training split {n}")
    state = _last_sample_state(run_dir)
    decision = None
    if state is not None:
        if len(state["given_labels"]) != n or not np.array_equal(state["given_labels"], given_labels):
            raise ConfigError(f"{run_dir}/samples: the saved given labels differ from the dataset's "
                              "(another data root, train fraction or noise seed?)")
        if method == "scn":
            figures = hard_relabel_figures(given_labels, state["train_labels"], true_labels)
            out.update({k: v for k, v in figures.items() if k in _HARD_RELABEL_FIGURES})
            return out
        decision = RobustDecision.from_sample_arrays(state)
    if method == "votes" and votes is not None:
        # Every image trained on its vote distribution: the targets' distance to the votes.
        targets = vote_figures(vote_distributions(votes), given_labels, votes, true_labels)
        out["tv_targets_to_votes_all"] = targets["tv_soft_to_votes"]
        out["tv_given_to_votes_all"] = targets["tv_given_to_votes"]
        if true_labels is not None:
            out["noise_rate"] = float(np.mean(np.asarray(given_labels) != np.asarray(true_labels)))
        return out
    figures = decision_figures(decision, given_labels, num_classes, true_labels, votes)
    out.update({k: v for k, v in figures.items() if k in _RUN_FIGURES or k.startswith("split_")})
    if votes is not None:
        # Over the relabelled samples, then over the whole split with each sample's target.
        relabeled = figures.get("votes_relabeled", {})
        out["tv_soft_to_votes"] = relabeled.get("tv_soft_to_votes", float("nan"))
        out["tv_given_to_votes"] = relabeled.get("tv_given_to_votes", float("nan"))
        out["tv_targets_to_votes_all"] = figures["votes_all"]["tv_soft_to_votes"]
        out["tv_given_to_votes_all"] = figures["votes_all"]["tv_given_to_votes"]
    return out


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _num(x: float | None, fmt: str = "{:.3f}") -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else fmt.format(x)


_TARGET_TEXT = {
    "damage_recovered": "share of the baseline's damage recovered ≥ {:.0%}",
    "margin_over_baseline": "full − baseline val accuracy (last epochs) ≥ {:+.1f} pts",
    "margin_over_baseline_best": "full (last epoch) − baseline's best epoch ≥ {:+.1f} pts",
    "split_f1": "split F1 at finding changed labels ≥ {:.2f}",
    "relabel_top1": "relabelled argmax = true label ≥ {:.0%}",
    "tv_soft_below_given": "soft labels closer to the votes than given labels (TV gap > {:.0f})",
    "epoch_time_ratio": "full robust epoch / baseline epoch ≤ {:.1f}x (worst setting)",
    "epoch_time_ratio_mean": "full mean epoch / baseline mean epoch ≤ {:.1f}x (worst setting)",
    "margin_over_best_peer": "full − best peer val accuracy (last epochs) {} {:+.1f} pts",
    "baseline": "cross-entropy val accuracy (last epoch) ≥ {:.1f}%",
    "full_minus_clean_baseline": "full − cross-entropy on the clean labels (last epochs) ≥ "
                                 "{:+.1f} pts",
    "votes_gap_recovered": "share of the one-tagger → vote-distribution accuracy gap recovered: "
                           "(full − baseline) / (votes − baseline)",
    "tv_distance_recovered": "share of the one-tagger → votes label distance the targets close: "
                             "1 − TV(targets, votes) / TV(given, votes)",
}


def _target_text(t: dict) -> str:
    what = t["measure"]
    if what.startswith(("mean_minus:", "paired_min:")):
        kind, model = what.split(":", 1)
        if kind == "mean_minus":
            return (f"full − {model}, mean val accuracy over seeds (last epochs) ≥ "
                    f"{100 * t['target']:+.1f} pts")
        return f"full − {model} (last epochs) > {100 * t['target']:+.1f} pts in every seed"
    if t["target"] is None:
        return _TARGET_TEXT[what]
    bound = (100 * t["target"] if what.startswith("margin_over")
             or what in ("baseline", "full_minus_clean_baseline") else t["target"])
    if what == "margin_over_best_peer":
        strict = (t["setting"], what) in _STRICT
        return _TARGET_TEXT[what].format(">" if strict else "≥", bound)
    return _TARGET_TEXT[what].format(bound)


def _target_value(t: dict, per_setting: dict) -> str:
    value, what = t["value"], t["measure"]
    if value is None:
        if what == "damage_recovered" and per_setting.get(t["setting"], {}).get("damage") is not None:
            return "n/a (no damage)"
        if what == "tv_soft_below_given" and \
                per_setting.get(t["setting"], {}).get("full_num_relabeled") == 0:
            return "n/a (nothing relabelled: the targets are the given labels)"
        if what == "votes_gap_recovered" and \
                per_setting.get(t["setting"], {}).get("votes_gap") is not None:
            return "n/a (votes not ahead of the baseline)"
        return "–"
    if what in ("epoch_time_ratio", "epoch_time_ratio_mean"):
        return _num(value, "{:.2f}x")
    if what in ("split_f1", "tv_soft_below_given"):
        return _num(value)
    if what in ("margin_over_baseline", "margin_over_baseline_best", "margin_over_best_peer",
                "full_minus_clean_baseline"):
        return _num(100 * value, "{:+.2f} pts")
    if what.startswith(("mean_minus:", "paired_min:")):
        kind, model = what.split(":", 1)
        row = per_setting.get(t["setting"], {})
        n = (min(row["models"]["full"]["n_seeds"], row["models"][model]["n_seeds"])
             if kind == "mean_minus" else row["paired"][model]["n_seeds"])
        return _num(100 * value, "{:+.2f} pts") + f" ({n} seed{'s' if n > 1 else ''})"
    return _pct(value) + "%"


def render_markdown(results: dict, comparison: dict, header: dict) -> str:
    """The benchmark report: one row per training, then the per-setting comparison, the ablations
    (when trained) and the targets."""
    lines = [f"# {header.get('title', 'Noise benchmark')}", ""]
    for key, value in header.items():
        if key != "title":
            shown = f"`{value}`" if key == "command" else value
            lines.append(f"- **{key}**: {shown}")
    lines += ["", "Accuracies in %, one training each: the last epoch's (the model a run ends "
              "with) and the best epoch's (for reference; nothing is selected on it). Memorised: "
              "share of the changed-label training images predicted as their wrong given label "
              "after the last epoch; fit: training accuracy on the given labels.", "",
              "## Trainings", "",
              "| setting | model | val acc last | val acc best (epoch) | test acc | memorised | "
              "fit | split P / R / F1 / AUC | relabelled | relabel precision % | "
              "relabel top-1 % (changed) | TV soft→votes (given→votes) | s/epoch (robust) |",
              "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|---|---:|"]
    for name, r in results.items():
        spec = parse_run_name(name)
        setting, variant = spec.setting, spec.variant + (f" (seed {spec.seed})" if spec.seed else "")
        split = "–"
        if r.get("split_f1") is not None:
            split = " / ".join(_num(r.get(f"split_{k}"), "{:.2f}") for k in ("precision", "recall",
                                                                            "f1", "auc"))
        relabel = "–"
        if r.get("relabel_top1") is not None:
            relabel = f"{_pct(r['relabel_top1'])} ({_pct(r.get('relabel_top1_changed'))})"
        tv = "–"
        if r.get("num_relabeled") and "tv_soft_to_votes" in r:
            tv = f"{_num(r.get('tv_soft_to_votes'))} ({_num(r.get('tv_given_to_votes'))})"
        seconds = _num(r["seconds_per_epoch"], "{:.1f}")
        if r.get("seconds_per_robust_epoch") is not None:
            seconds += f" ({_num(r['seconds_per_robust_epoch'], '{:.1f}')})"
        best = f"{_pct(r.get('best_val_accuracy'))} ({r.get('best_epoch', '–')})"
        lines.append(f"| {setting} | {variant} | {_pct(r['val_accuracy'])} | {best} | "
                     f"{_pct(r.get('test_accuracy'))} | {_num(r.get('memorised_share'), '{:.2f}')} | "
                     f"{_num(r.get('train_accuracy_given'), '{:.2f}')} | {split} | "
                     f"{r.get('num_relabeled', '–')} | {_pct(r.get('relabel_precision'))} | "
                     f"{relabel} | {tv} | {seconds} |")
    per_setting = comparison["per_setting"]
    lines += ["", "## Full system against the baseline (validation)", "",
              "| setting | baseline last | baseline best | full last | full − baseline last (pts) | "
              "full − baseline best (pts) | damage (pts) | recovered | robust epoch / baseline "
              "epoch | mean epoch ratio |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s, row in per_setting.items():
        recovered = "–"
        if row.get("damage_recovered") is not None:
            recovered = _pct(row["damage_recovered"]) + "%"
        elif row.get("damage") is not None:
            recovered = "n/a (no damage)"
        lines.append(f"| {s} | {_pct(row['baseline'])} | {_pct(row.get('baseline_best'))} | "
                     f"{_pct(row['full'])} | {_pct(row['margin_over_baseline'])} | "
                     f"{_pct(row.get('margin_over_baseline_best'))} | {_pct(row.get('damage'))} | "
                     f"{recovered} | "
                     f"{_num(row.get('epoch_time_ratio'), '{:.2f}x')} | "
                     f"{_num(row.get('epoch_time_ratio_mean'), '{:.2f}x')} |")
    if any("peers" in row for row in per_setting.values()):
        lines += ["", "## Full system against the peers (validation)", "",
                  "| setting | full last | peer | peer last | peer best | "
                  "full − peer last (pts) |",
                  "|---|---:|---|---:|---:|---:|"]
        for s, row in per_setting.items():
            for peer, p in row.get("peers", {}).items():
                lines.append(f"| {s} | {_pct(row['full'])} | {peer} | {_pct(p['val_accuracy'])} | "
                             f"{_pct(p['best_val_accuracy'])} | {_pct(p['full_minus_peer'])} |")
    if any("ablation_contribution" in row for row in per_setting.values()):
        lines += ["", "## Ablations: full − (full without the part), val accuracy pts", "",
                  "| setting | part | contribution (pts) |", "|---|---|---:|"]
        for s, row in per_setting.items():
            for part, delta in row.get("ablation_contribution", {}).items():
                lines.append(f"| {s} | {part} | {_pct(delta)} |")
    if any("votes" in row for row in per_setting.values()):
        lines += ["", "## One tagger against ten (validation)", "",
                  "The baseline trained on each image's 10-tagger vote distribution (`votes`) "
                  "against the baseline and the full system trained on one tagger's label per "
                  "image; recovered: (full − baseline) / (votes − baseline). TV: mean total-"
                  "variation distance to the votes over the training split, of the given labels "
                  "and of the full system's last training targets.", "",
                  "| setting | baseline (one tagger) | full | votes (ten) | "
                  "votes − baseline (pts) | recovered | TV given→votes | TV targets→votes | "
                  "label distance closed |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s, row in per_setting.items():
            if "votes" not in row:
                continue
            tv_given, tv_targets = (_get(results, s, "full", k) for k in (
                "tv_given_to_votes_all", "tv_targets_to_votes_all"))
            recovered = row.get("votes_gap_recovered")
            lines.append(f"| {s} | {_pct(row['baseline'])} | {_pct(row['full'])} | "
                         f"{_pct(row['votes'])} | {_pct(row.get('votes_gap'))} | "
                         f"{'–' if recovered is None else _pct(recovered) + '%'} | "
                         f"{_num(tv_given)} | {_num(tv_targets)} | "
                         f"{_pct(row.get('tv_distance_recovered'))}"
                         f"{'%' if row.get('tv_distance_recovered') is not None else ''} |")
    lines += _seed_tables(per_setting)
    lines += ["", "## Targets", "", "| setting | target | measured | met |", "|---|---|---:|---|"]
    for t in comparison["targets"]:
        text = _target_text(t)
        met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
        if t["target"] is None:  # a figure to report, with no bound to meet
            shown = _target_value(t, per_setting)
            met = ("reported" if t["value"] is not None
                   else "n/a" if shown.startswith("n/a") else "not measured")
        lines.append(f"| {t['setting']} | {text} | {_target_value(t, per_setting)} | {met} |")
    lines.append("")
    return "\n".join(lines)


def _seed_tables(per_setting: dict) -> list[str]:
    """Markdown of the seed statistics: mean ± sd per setting and model, then the paired
    differences full − model per seed."""
    lines = ["", "## Over seeds: last-epoch validation accuracy", "",
             "Mean ± sample standard deviation over the seeds trained; the per-seed values in seed "
             "order.", "",
             "| setting | model | seeds | mean ± sd | per seed |", "|---|---|---:|---:|---|"]
    for s, row in per_setting.items():
        for model, m in row.get("models", {}).items():
            mean = _pct(m["val_accuracy_mean"])
            if m["val_accuracy_std"] is not None:
                mean += f" ± {_pct(m['val_accuracy_std'])}"
            per_seed = ", ".join(f"{k}: {_pct(v)}" for k, v in m["val_accuracy_by_seed"].items())
            lines.append(f"| {s} | {model} | {m['n_seeds']} | {mean} | {per_seed} |")
    lines += ["", "## Over seeds: full − model, paired by seed (pts)", "",
              "| setting | model | seeds | per seed | mean | smallest |",
              "|---|---|---:|---|---:|---:|"]
    for s, row in per_setting.items():
        for model, p in row.get("paired", {}).items():
            per_seed = ", ".join(f"{k}: {100 * v:+.2f}" for k, v in p["full_minus_by_seed"].items())
            lines.append(f"| {s} | {model} | {p['n_seeds']} | {per_seed} | "
                         f"{100 * p['mean']:+.2f} | {100 * p['min']:+.2f} |")
    return lines


def plot_setting_curves(curves: dict[str, dict], path: Path, title: str) -> None:
    """One PNG for a label setting: validation accuracy (left) and memorised share (right) per
    epoch, one line per model (``curves`` maps a model name to its summary's ``curves``: the
    per-epoch records of ``metrics.jsonl``, whose memorised share is counted on the training
    batches, see ``engine.loss_terms.fit_figures``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_robust.utils import atomic_path
    fig, (ax_acc, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    nan = float("nan")
    for name, curve in curves.items():
        epochs = [e + 1 for e in curve["epoch"]]
        ax_acc.plot(epochs, [100 * v for v in curve["val_accuracy"]], label=name)
        memorised = curve.get("memorised_share") or []
        if any(v is not None for v in memorised):
            ax_mem.plot(epochs, [nan if v is None else v for v in memorised], label=name)
        else:  # clean labels: nothing to memorise; show the fit of the given labels instead
            ax_mem.plot(epochs, [nan if v is None else v for v in curve["train_accuracy_given"]],
                        label=f"{name} (fit of given labels)", linestyle="--")
    ax_acc.set(xlabel="epoch", ylabel="validation accuracy (%)", title=f"{title}: validation")
    ax_mem.set(xlabel="epoch", ylabel="share", ylim=(0, 1),
               title=f"{title}: memorised share of changed labels")
    for ax in (ax_acc, ax_mem):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
