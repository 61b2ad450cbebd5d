"""How well the split finds noisy labels and how well relabelling repairs them.

With synthetic noise the dataset knows each sample's clean label, so ``changed_mask = targets !=
clean_targets`` is the ground truth of "noisy". The positive class throughout is *noisy*.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

__all__ = ["noise_detection_metrics", "relabel_accuracy", "total_variation_distance",
           "per_class_clean_ratio"]


def noise_detection_metrics(clean_prob: np.ndarray, changed_mask: np.ndarray,
                            threshold: float = 0.5) -> dict[str, float]:
    """Precision, recall, F1 and ROC-AUC of calling a sample noisy.

    Args:
        clean_prob: (N,) clean probabilities from the split.
        changed_mask: (N,) bool, True where the given label differs from the clean one.
        threshold: predicted noisy = ``clean_prob <= threshold`` (the split calls clean ``>``).

    Returns:
        dict with ``precision``, ``recall``, ``f1`` (0 where undefined: nothing predicted or
        nothing noisy) and ``auc`` on the score ``1 - clean_prob`` (NaN when only one class is
        present), plus ``num_noisy`` and ``num_predicted_noisy``.
    """
    clean_prob = np.asarray(clean_prob, dtype=np.float64).reshape(-1)
    noisy = np.asarray(changed_mask, dtype=bool).reshape(-1)
    predicted = clean_prob <= threshold
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
