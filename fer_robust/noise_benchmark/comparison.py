"""The comparison of the noise benchmark's runs: margins over the baseline and the peers, the
statistics over seeds, one tagger against ten, and the acceptance targets.

:func:`compare` reads the run summaries of
:func:`fer_robust.noise_benchmark.report.summarize_run` (keyed by run name,
``<setting>-<variant>[-seed<k>]``) and gives, per label setting, the figures below and then each
target of the benchmark's size (:func:`targets_for`), met or not.

One tagger against ten (a setting with a ``votes`` run, :func:`compare`): ``votes`` is that run's
last-epoch validation accuracy and ``votes_gap`` = votes − baseline, the accuracy that training on
the ten taggers' vote distribution gains over training on one tagger's label per image.
``votes_gap_recovered`` = (full − baseline) / (votes − baseline) is the share of that gap the full
system recovers from the one tagger's labels (``None`` when the gap is not positive: nothing to
recover); 1 means relabelling one tagger's labels trains as well as ten taggers' votes.
``tv_distance_recovered`` = (TV(given, votes) − TV(targets, votes)) / TV(given, votes), over the
whole training split with the full system's last training targets, is the same share measured on
the labels rather than on accuracy: the distance from one tagger's label to the votes that the
relabelled targets close (the votes row's targets are at distance 0). ``full_minus_clean_baseline``
is the full system under a noisy setting against cross-entropy on the clean (majority) labels.

Seeds (``tools/benchmark.py --seeds``): a run of seed ``k > 0`` is named
``<setting>-<variant>-seed<k>``. The per-run figures, the comparison with the baseline and the
peers and the seed-0 targets read the seed-0 runs; ``per_setting[s]["models"]`` gives per model the
mean and (sample, ``ddof=1``) standard deviation of last-epoch validation accuracy over every seed
trained (``val_accuracy_mean``, ``val_accuracy_std``, ``n_seeds``), and ``per_setting[s]["paired"]``
per other model the difference full − model of every seed both trained, its mean and its smallest
value. The targets named ``mean_minus:<model>`` and ``paired_min:<model>`` read those.
"""
from __future__ import annotations

import math

import numpy as np

from fer_robust.noise_benchmark.recipe import PEERS, parse_run_name

__all__ = ["compare", "seed_statistics", "targets_for", "TARGETS", "DATA_TARGETS", "PEER_VARIANTS"]


#: The peer variants of the benchmark, in order.
PEER_VARIANTS = tuple(PEERS)

# (setting, what, target) rows of the benchmark's acceptance targets; see :func:`compare`.
# The margins compare the full system's last epoch with the baseline's last (``margin_over_baseline``)
# and best (``margin_over_baseline_best``) epochs, and with the best peer's last epoch
# (``margin_over_best_peer``: under noise the full system must be ahead of every peer, strictly;
# under clean labels not behind any); the time ratio compares mean epoch times.
TARGETS = [
    ("sym30", "margin_over_baseline", 0.07),
    ("sym30", "margin_over_baseline_best", 0.02),
    ("annotator", "margin_over_baseline", 0.02),
    ("clean", "margin_over_baseline", -0.003),
    ("sym30", "split_f1", 0.85),
    ("sym30", "relabel_top1", 0.75),
    ("clean", "tv_soft_below_given", 0.0),
    ("sym30", "tv_soft_below_given", 0.0),
    ("annotator", "tv_soft_below_given", 0.0),
    ("*", "epoch_time_ratio_mean", 1.5),
    ("sym30", "margin_over_best_peer", 0.0),
    ("annotator", "margin_over_best_peer", 0.0),
    ("clean", "margin_over_best_peer", 0.0),
    # Over seeds: means of last-epoch accuracy, and the paired difference in every seed.
    ("sym30", "mean_minus:eac", 0.02),
    ("sym30", "mean_minus:gce", 0.02),
    ("annotator", "mean_minus:eac", 0.01),
    ("clean", "mean_minus:baseline", -0.003),
    ("sym30", "paired_min:eac", 0.0),
    ("annotator", "paired_min:eac", 0.0),
]
# The data size's targets (the whole training split, ``tools/benchmark.py --size data``): cross-
# entropy on the majority labels at least 84.0% (the published from-scratch anchors are 83-85%), the
# full system no more than 0.3 behind it; under one tagger's labels the full system 1.5 points
# ahead of cross-entropy on those labels and within 1.5 of cross-entropy on the majority labels;
# the shares of the one-tagger-to-ten distance recovered are reported (bound ``None``); the mean
# epoch at most 1.5x the baseline's.
DATA_TARGETS = [
    ("clean", "baseline", 0.84),
    ("clean", "margin_over_baseline", -0.003),
    ("annotator", "margin_over_baseline", 0.015),
    ("annotator", "full_minus_clean_baseline", -0.015),
    ("annotator", "votes_gap_recovered", None),
    ("annotator", "tv_distance_recovered", None),
    ("*", "epoch_time_ratio_mean", 1.5),
]

#: Size -> its targets (the others: :data:`TARGETS`).
_SIZE_TARGETS = {"data": DATA_TARGETS}


def targets_for(size: str | None) -> list:
    """The ``(setting, measure, bound)`` targets of a benchmark size (``None``: the default)."""
    return _SIZE_TARGETS.get(size or "", TARGETS)


# Targets met only strictly above their bound ("ahead of").
_STRICT = {("sym30", "margin_over_best_peer"), ("annotator", "margin_over_best_peer"),
           ("*", "tv_soft_below_given"), ("sym30", "paired_min:eac"),
           ("annotator", "paired_min:eac")}


def seed_statistics(results: dict, setting: str) -> tuple[dict, dict]:
    """``(models, paired)`` of one setting over every seed in ``results`` (see the module
    docstring): per model its last-epoch validation accuracy per seed, mean, sample standard
    deviation (None for one seed) and seed count; per model other than the full system the paired
    difference full − model of every seed both trained."""
    by_model: dict[str, dict[int, float]] = {}
    for name, summary in results.items():
        try:
            spec = parse_run_name(name)
        except KeyError:
            continue
        acc = summary.get("val_accuracy")
        if spec.setting == setting and acc is not None and not (isinstance(acc, float)
                                                                 and math.isnan(acc)):
            by_model.setdefault(spec.variant, {})[spec.seed] = float(acc)
    models = {}
    for variant, per_seed in by_model.items():
        values = np.array([per_seed[k] for k in sorted(per_seed)])
        models[variant] = {"val_accuracy_by_seed": {k: per_seed[k] for k in sorted(per_seed)},
                           "val_accuracy_mean": float(values.mean()),
                           "val_accuracy_std": float(values.std(ddof=1)) if values.size > 1
                           else None,
                           "n_seeds": int(values.size)}
    paired = {}
    full = by_model.get("full", {})
    for variant, per_seed in by_model.items():
        common = sorted(set(full) & set(per_seed))
        if variant == "full" or not common:
            continue
        diffs = {k: full[k] - per_seed[k] for k in common}
        paired[variant] = {"full_minus_by_seed": diffs,
                           "mean": float(np.mean(list(diffs.values()))),
                           "min": float(min(diffs.values())), "n_seeds": len(common)}
    return models, paired


def _get(results: dict, setting: str, variant: str, key: str) -> float | None:
    value = results.get(f"{setting}-{variant}", {}).get(key)
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def compare(results: dict, targets: list | None = None) -> dict:
    """Per setting: damage, recovered share, margin, time ratios, ablation deltas; then each target
    of ``targets`` (default :data:`TARGETS`; a bound of ``None`` is a figure reported, never met or
    missed).

    ``results`` maps run names (``"<setting>-<variant>"``) to :func:`summarize_run` dicts.
    ``damage_recovered`` is ``None`` when the noise did not hurt the baseline (damage <= 0); a
    target whose runs are missing is reported as not measured (``met: None``). The time ratio is
    the full system's robust epoch (per-sample pass, split and relabelling included) over the
    baseline's epoch; ``epoch_time_ratio_mean`` averages over all the full system's epochs.
    ``peers`` gives, per peer trained in the setting, its last and best validation accuracy and
    ``full_minus_peer`` (full system's last epoch minus the peer's); ``margin_over_best_peer`` is
    the smallest of those (the full system against the best peer).
    """
    specs = {}
    for name in results:
        try:
            specs[name] = parse_run_name(name)
        except KeyError:
            continue
    settings = list(dict.fromkeys(spec.setting for spec in specs.values()))
    per_setting: dict = {}
    base_clean = _get(results, "clean", "baseline", "val_accuracy")
    for s in settings:
        base, full = (_get(results, s, v, "val_accuracy") for v in ("baseline", "full"))
        base_best = _get(results, s, "baseline", "best_val_accuracy")
        row: dict = {"baseline": base, "baseline_best": base_best, "full": full,
                     "margin_over_baseline": None if None in (base, full) else full - base,
                     "margin_over_baseline_best": None if None in (base_best, full)
                     else full - base_best}
        if s != "clean" and base_clean is not None and base is not None:
            row["damage"] = base_clean - base
            row["damage_recovered"] = ((full - base) / row["damage"]
                                       if full is not None and row["damage"] > 0 else None)
        if s != "clean" and base_clean is not None and full is not None:
            row["full_minus_clean_baseline"] = full - base_clean
        votes = _get(results, s, "votes", "val_accuracy")
        if votes is not None:  # one tagger against ten (see the module docstring)
            row["votes"] = votes
            row["votes_gap"] = None if base is None else votes - base
            row["votes_gap_recovered"] = (
                (full - base) / row["votes_gap"]
                if full is not None and row["votes_gap"] is not None and row["votes_gap"] > 0
                else None)
        tv_all = [_get(results, s, "full", k) for k in ("tv_given_to_votes_all",
                                                         "tv_targets_to_votes_all")]
        if None not in tv_all and tv_all[0] > 0:
            row["tv_distance_recovered"] = (tv_all[0] - tv_all[1]) / tv_all[0]
        t_base = _get(results, s, "baseline", "seconds_per_epoch")
        t_full = _get(results, s, "full", "seconds_per_epoch")
        t_robust = _get(results, s, "full", "seconds_per_robust_epoch")
        if t_base:
            if t_full is not None:
                row["epoch_time_ratio_mean"] = t_full / t_base
            if t_robust is not None or t_full is not None:
                row["epoch_time_ratio"] = (t_robust if t_robust is not None else t_full) / t_base
        tv_soft, tv_given = (_get(results, s, "full", k) for k in ("tv_soft_to_votes",
                                                                   "tv_given_to_votes"))
        if None not in (tv_soft, tv_given):
            row["tv_soft_below_given"] = tv_given - tv_soft
        # A full system that relabelled nothing (the noise gate took the labels as clean) has no
        # soft label to compare: its targets are the given labels.
        row["full_num_relabeled"] = _get(results, s, "full", "num_relabeled")
        ablations = {spec.variant[3:]: full - _get(results, s, spec.variant, "val_accuracy")
                     for spec in specs.values()
                     if spec.setting == s and spec.seed == 0 and spec.variant.startswith("no_")
                     and full is not None
                     and _get(results, s, spec.variant, "val_accuracy") is not None}
        if ablations:
            row["ablation_contribution"] = ablations  # full - (full without the part)
        peers = {}
        for peer in PEER_VARIANTS:
            last = _get(results, s, peer, "val_accuracy")
            if last is None:
                continue
            peers[peer] = {"val_accuracy": last,
                           "best_val_accuracy": _get(results, s, peer, "best_val_accuracy"),
                           "full_minus_peer": None if full is None else full - last}
        if peers:
            row["peers"] = peers
            margins = [p["full_minus_peer"] for p in peers.values()
                       if p["full_minus_peer"] is not None]
            row["margin_over_best_peer"] = min(margins) if margins else None
        row["models"], row["paired"] = seed_statistics(results, s)
        per_setting[s] = row

    checked = []
    for setting, what, bound in (TARGETS if targets is None else targets):
        if what in ("epoch_time_ratio", "epoch_time_ratio_mean"):
            ratios = [r[what] for r in per_setting.values() if what in r]
            value = max(ratios) if ratios else None
            met = None if value is None else value <= bound
        else:
            if what in ("split_f1", "relabel_top1"):
                value = _get(results, setting, "full", what)
            elif what.startswith(("mean_minus:", "paired_min:")):
                value = _seed_measure(per_setting.get(setting, {}), what)
            else:
                value = per_setting.get(setting, {}).get(what)
            if value is None or bound is None:
                met = None
            elif (setting, what) in _STRICT or ("*", what) in _STRICT:
                met = value > bound
            else:
                met = value >= bound
        checked.append({"setting": setting, "measure": what, "target": bound, "value": value,
                        "met": met})
    return {"per_setting": per_setting, "targets": checked}


def _seed_measure(row: dict, what: str) -> float | None:
    """A seed target's value: ``mean_minus:<model>`` (full's mean − the model's mean) or
    ``paired_min:<model>`` (the smallest per-seed full − model)."""
    kind, model = what.split(":", 1)
    models = row.get("models", {})
    if kind == "mean_minus":
        if "full" not in models or model not in models:
            return None
        return models["full"]["val_accuracy_mean"] - models[model]["val_accuracy_mean"]
    return row.get("paired", {}).get(model, {}).get("min")
