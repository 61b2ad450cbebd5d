"""How well the split finds noisy labels and how well relabelling repairs them.

With synthetic noise the dataset knows each sample's clean label, so ``changed_mask = targets !=
clean_targets`` is the ground truth of "noisy". The positive class throughout is *noisy*.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from sklearn.metrics import roc_auc_score

if TYPE_CHECKING:
    from fer_robust.robust.selection import RobustDecision

__all__ = ["decision_figures", "hard_relabel_figures", "noise_detection_metrics",
           "relabel_accuracy", "total_variation_distance", "vote_figures", "per_class_clean_ratio"]


def noise_detection_metrics(clean_prob: np.ndarray, changed_mask: np.ndarray,
                            threshold: float = 0.5,
                            predicted_noisy: np.ndarray | None = None) -> dict[str, float]:
    """Precision, recall, F1 and ROC-AUC of calling a sample noisy.

    Args:
        clean_prob: (N,) clean probabilities from the split.
        changed_mask: (N,) bool, True where the given label differs from the clean one.
        threshold: predicted noisy = ``clean_prob <= threshold`` (the split calls clean ``>``).
        predicted_noisy: (N,) bool, the split's own call (``~clean_mask``), used instead of the
            threshold when given.

    Returns:
        dict with ``precision``, ``recall``, ``f1`` (0 where undefined: nothing predicted or
        nothing noisy) and ``auc`` on the score ``1 - clean_prob`` (NaN when only one class is
        present), plus ``num_noisy`` and ``num_predicted_noisy``.
    """
    clean_prob = np.asarray(clean_prob, dtype=np.float64).reshape(-1)
    noisy = np.asarray(changed_mask, dtype=bool).reshape(-1)
    predicted = (clean_prob <= threshold if predicted_noisy is None
                 else np.asarray(predicted_noisy, dtype=bool).reshape(-1))
    true_pos = float(np.sum(predicted & noisy))
    precision = true_pos / predicted.sum() if predicted.any() else 0.0
    recall = true_pos / noisy.sum() if noisy.any() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    both_present = 0 < noisy.sum() < noisy.size
    auc = float(roc_auc_score(noisy, 1.0 - clean_prob)) if both_present else float("nan")
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1), "auc": auc,
            "num_noisy": int(noisy.sum()), "num_predicted_noisy": int(predicted.sum())}


def relabel_accuracy(soft_labels: np.ndarray, true_labels: np.ndarray) -> float:
    """Share of rows whose soft label's argmax is the true (clean) label; NaN for no row.

    Args:
        soft_labels: (N, C) distributions (or any scores).
        true_labels: (N,) int clean labels.
    """
    soft_labels = np.asarray(soft_labels)
    if soft_labels.shape[0] == 0:
        return float("nan")
    return float(np.mean(soft_labels.argmax(1) == np.asarray(true_labels).reshape(-1)))


def total_variation_distance(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Row-wise ``0.5 * sum_c |p_c - q_c|`` after normalising each row to sum 1.

    Args:
        p, q: (N, C) non-negative (e.g. soft labels vs. FERPlus vote distributions).

    Returns:
        (N,) distances in [0, 1]. An all-zero row is taken as the uniform distribution.
    """
    def normalized(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        total = x.sum(1, keepdims=True)
        return np.where(total > 0, x / np.where(total > 0, total, 1.0), 1.0 / x.shape[1])

    return 0.5 * np.abs(normalized(p) - normalized(q)).sum(1)


def per_class_clean_ratio(clean_mask: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C,) share of each (given) class called clean; NaN for a class with no sample."""
    clean_mask = np.asarray(clean_mask, dtype=bool).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    clean = np.bincount(labels, weights=clean_mask.astype(np.float64), minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, clean / np.maximum(counts, 1), np.nan)


def vote_figures(targets: np.ndarray, given_labels: np.ndarray, votes: np.ndarray,
                 majority_labels: np.ndarray | None) -> dict[str, float]:
    """How close training targets and given labels are to the annotators' vote distribution.

    Args:
        targets: ``(N, C)`` label distributions (e.g. :attr:`RobustDecision.targets`).
        given_labels: ``(N,)`` the labels training was given.
        votes: ``(N, C)`` annotator vote counts (FERPlus: 10 taggers per image).
        majority_labels: ``(N,)`` the votes' majority labels (``None``: no agreement figures).

    Returns:
        ``tv_soft_to_votes`` / ``tv_given_to_votes``: mean total-variation distance of the targets /
        the one-hot given labels to the vote distribution; ``argmax_agreement_soft_with_majority``
        / ``argmax_agreement_given_with_majority``: share whose argmax is the majority label;
        ``num_samples``. The means are NaN for no row.
    """
    targets = np.asarray(targets)
    given_labels = np.asarray(given_labels, np.int64)
    n, c = targets.shape
    if n == 0:
        nan = float("nan")
        return {"tv_soft_to_votes": nan, "tv_given_to_votes": nan,
                "argmax_agreement_soft_with_majority": nan,
                "argmax_agreement_given_with_majority": nan, "num_samples": 0}
    given_onehot = np.eye(c, dtype=np.float32)[given_labels]
    figures = {"tv_soft_to_votes": float(total_variation_distance(targets, votes).mean()),
               "tv_given_to_votes": float(total_variation_distance(given_onehot, votes).mean())}
    if majority_labels is not None:
        majority = np.asarray(majority_labels)
        figures["argmax_agreement_soft_with_majority"] = float(
            (targets.argmax(1) == majority).mean())
        figures["argmax_agreement_given_with_majority"] = float(
            (given_labels == majority).mean())
    figures["num_samples"] = int(n)
    return figures


def decision_figures(decision: "RobustDecision | None", given_labels: np.ndarray, num_classes: int,
                     true_labels: np.ndarray | None = None, votes: np.ndarray | None = None,
                     majority_labels: np.ndarray | None = None) -> dict:
    """Every figure of one robust decision: the trainer logs them (``metrics.jsonl``),
    ``tools/relabel.py`` writes them (``summary.json``) and the noise benchmark reports them
    (``results.json``), each under the names it has always used.

    Args:
        decision: a :class:`~fer_robust.robust.selection.RobustDecision`, or ``None`` when no
            decision was made (every sample trains on its given label): then only the figures of
            the labels themselves are given (``noise_rate``, ``votes_all``).
        given_labels: ``(N,)`` the labels training was given.
        num_classes: C.
        true_labels: ``(N,)`` the clean labels, when known (injected or annotator noise).
        votes: ``(N, C)`` annotator vote counts, when the dataset has them.
        majority_labels: ``(N,)`` the votes' majority labels (default ``true_labels``).

    Returns a flat dict; a figure is present only where it is defined:

    - ``clean_ratio``, ``clean_ratio_per_class`` (list of C), ``num_noisy`` (called noisy),
      ``num_relabeled`` (train on their soft label), ``num_label_changes`` (``new_labels`` that
      differ from the given one);
    - with ``true_labels``: ``noise_rate``; when some given label differs from the true one,
      ``split_precision`` / ``split_recall`` / ``split_f1`` / ``split_auc`` / ``split_num_noisy`` /
      ``split_num_predicted_noisy`` (:func:`noise_detection_metrics` of the decision's own call,
      noisy = not ``clean_mask``; AUC on ``1 - clean_prob``) and
      ``changed_relabeled_share`` (share of the changed labels that are relabelled);
      ``relabel_accuracy``: share of the samples given a retrieval soft label whose soft label's
      argmax is the true label; ``relabel_top1``: the same over the relabelled samples (those whose
      soft label reaches ``min_confidence``; equal without a floor); each with a ``_changed``
      variant over those whose given label was changed; ``relabel_precision``: share of the
      relabelled samples whose given label was wrong (relabelling touched a noisy label);
    - with ``votes``: ``votes_all`` (:func:`vote_figures` of every sample's target) and
      ``votes_relabeled`` (of the relabelled samples, when there are any).
    """
    given = np.asarray(given_labels, np.int64)
    figures: dict = {}
    if decision is not None:
        figures.update({
            "clean_ratio": float(decision.clean_mask.mean()),
            "clean_ratio_per_class": [float(x) for x in per_class_clean_ratio(
                decision.clean_mask, given, num_classes)],
            "num_noisy": int((~decision.clean_mask).sum()),
            "num_relabeled": int(decision.relabeled_mask.sum()),
            "num_label_changes": int((decision.new_labels != given).sum()),
        })
    if true_labels is not None:
        true = np.asarray(true_labels, np.int64)
        changed = given != true
        if decision is not None:
            if changed.any():
                detection = noise_detection_metrics(decision.clean_prob, changed,
                                                    predicted_noisy=~decision.clean_mask)
                figures.update({f"split_{k}": v for k, v in detection.items()})
            for name, mask in (("relabel_accuracy", decision.retrieved_mask),
                               ("relabel_top1", decision.relabeled_mask)):
                if mask.any():
                    figures[name] = relabel_accuracy(decision.soft_labels[mask], true[mask])
                if (mask & changed).any():
                    figures[f"{name}_changed"] = relabel_accuracy(
                        decision.soft_labels[mask & changed], true[mask & changed])
            if decision.relabeled_mask.any():
                figures["relabel_precision"] = float(changed[decision.relabeled_mask].mean())
            if changed.any():
                figures["changed_relabeled_share"] = float(
                    (decision.relabeled_mask & changed).sum() / changed.sum())
        figures["noise_rate"] = float(changed.mean())
    if votes is not None:
        majority = true_labels if majority_labels is None else majority_labels
        if decision is None:
            targets, relabeled = np.eye(num_classes, dtype=np.float32)[given], None
        else:
            targets, relabeled = decision.targets, decision.relabeled_mask
        figures["votes_all"] = vote_figures(targets, given, votes, majority)
        if relabeled is not None and relabeled.any():
            figures["votes_relabeled"] = vote_figures(
                targets[relabeled], given[relabeled], votes[relabeled],
                None if majority is None else np.asarray(majority)[relabeled])
    return figures


def hard_relabel_figures(given_labels: np.ndarray, train_labels: np.ndarray,
                         true_labels: np.ndarray | None = None) -> dict:
    """The figures of a hard relabelling (SCN's): each sample trains on ``train_labels``, which
    differs from its given label where the method relabelled it. Named as
    :func:`decision_figures` names the same figures of a retrieval relabelling, so the benchmark
    reports both alike.

    Args:
        given_labels: ``(N,)`` the labels training was given.
        train_labels: ``(N,)`` the labels the samples train on now.
        true_labels: ``(N,)`` the clean labels, when known.

    Returns:
        ``num_relabeled``: samples whose training label differs from their given label; with
        ``true_labels`` also ``noise_rate`` (share of wrong given labels) and
        ``train_label_accuracy`` (share of training labels that are true, against ``1 -
        noise_rate`` before relabelling), and, where there are relabelled samples:
        ``relabel_precision``: share of them whose given label was wrong (the relabelling touched
        a noisy label); ``relabel_accuracy`` (= ``relabel_top1``): share of them whose new label
        is the true one; ``relabel_accuracy_changed`` (= ``relabel_top1_changed``): the same over
        those whose given label was wrong; ``changed_relabeled_share``: share of the wrong given
        labels that were relabelled (the relabelling's recall).
    """
    given = np.asarray(given_labels, np.int64)
    train = np.asarray(train_labels, np.int64)
    relabeled = train != given
    figures: dict = {"num_relabeled": int(relabeled.sum())}
    if true_labels is None:
        return figures
    true = np.asarray(true_labels, np.int64)
    changed = given != true
    figures["noise_rate"] = float(changed.mean())
    figures["train_label_accuracy"] = float((train == true).mean())
    if relabeled.any():
        figures["relabel_precision"] = float(changed[relabeled].mean())
        figures["relabel_accuracy"] = figures["relabel_top1"] = float(
            (train[relabeled] == true[relabeled]).mean())
    if (relabeled & changed).any():
        both = relabeled & changed
        figures["relabel_accuracy_changed"] = figures["relabel_top1_changed"] = float(
            (train[both] == true[both]).mean())
    if changed.any():
        figures["changed_relabeled_share"] = float((relabeled & changed).sum() / changed.sum())
    return figures
