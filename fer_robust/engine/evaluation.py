"""Evaluation: eval-mode passes over a dataset and the classification metrics FER papers report.

One loop, :func:`predict`, serves every pass: :func:`predict_logits` (validation, test, the final
fit figures) and :func:`per_sample_pass` (loss, prediction and embedding of every training image,
for the robust stages and ``tools/relabel.py``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from sklearn.metrics import confusion_matrix, f1_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fer_robust.engine.distributed import gather_by_index

__all__ = ["tta_logits", "predict", "predict_logits", "SamplePassResult", "per_sample_pass",
           "classification_metrics", "save_confusion_png"]


def tta_logits(model: torch.nn.Module, images: torch.Tensor, hflip: bool = False,
               out: dict | None = None) -> torch.Tensor:
    """Logits ``(N, C)`` of an eval-mode model, averaged with the mirrored images' if ``hflip``
    (``out``: the model's outputs for ``images``, when already computed)."""
    logits = (model(images) if out is None else out)["logits"].float()
    if hflip:
        logits = 0.5 * (logits + model(torch.flip(images, dims=[3]))["logits"].float())
    return logits


# What :func:`predict` can compute per sample, from the model's outputs ``out``, the (float,
# TTA-averaged) logits and the loader's labels.
_OUTPUTS: dict[str, Callable[[dict, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "logits": lambda out, logits, labels: logits,
    "label": lambda out, logits, labels: labels,
    "prob": lambda out, logits, labels: logits.softmax(1),
    # Cross-entropy of the global logits against the loader's (given) label.
    "loss": lambda out, logits, labels: F.cross_entropy(logits, labels, reduction="none"),
    # The retrieval embedding V = l2norm(concat(L, G)).
    "embedding": lambda out, logits, labels: out["embedding"].float(),
}


@torch.no_grad()
def predict(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
            outputs: Sequence[str] = ("logits", "label"), hflip_tta: bool = False,
            desc: str = "eval", progress: bool = True) -> dict[str, np.ndarray]:
    """One pass of the model in eval mode over a prepared, ordered loader.

    Returns ``{name: array}`` for each of ``outputs`` (``logits`` (N, C), ``label`` (N,), ``prob``
    (N, C), ``loss`` (N,), ``embedding`` (N, D)), in dataset order and identical on every process.
    Each process computes its shard; ``(index, value)`` pairs are gathered and scattered by dataset
    index, so padded duplicates of the sharded loader overwrite identical rows. Every index must be
    visited: a sample the loader never yields is an error rather than a silent zero. In eval mode
    ARM uses its running affinity, so predictions do not depend on the batch size or on the other
    images in a batch. With ``hflip_tta`` the logits of the image and its mirror are averaged. The
    model's train/eval mode is restored afterwards.
    """
    unknown = set(outputs) - set(_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; valid: {sorted(_OUTPUTS)}")
    num_samples = len(loader.dataset)
    was_training = model.training
    model.eval()
    arrays: dict[str, np.ndarray] = {}
    seen = np.zeros(num_samples, bool)
    bar = tqdm(loader, desc=desc, leave=False,
               disable=not (progress and accelerator.is_local_main_process))
    for images, labels, index in bar:
        out = model(images)
        logits = tta_logits(model, images, hflip_tta, out)
        values = {name: _OUTPUTS[name](out, logits, labels) for name in outputs}
        seen[gather_by_index(accelerator, index, values, arrays, num_samples)] = True
    if not seen.all():
        raise RuntimeError(f"{desc}: the pass missed {int((~seen).sum())} of {num_samples} samples")
    model.train(was_training)
    return arrays


def predict_logits(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                   hflip_tta: bool = False, desc: str = "eval",
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits for every sample of a prepared, ordered loader (see :func:`predict`).

    Returns ``(logits (N, C), labels (N,), index (N,))`` in dataset order on every process.
    """
    arrays = predict(model, loader, accelerator, ("logits", "label"), hflip_tta, desc, progress)
    return arrays["logits"], arrays["label"], np.arange(len(arrays["label"]))


@dataclass
class SamplePassResult:
    """Arrays over the whole training set, in dataset order, identical on every process.

    loss: ``(N,)`` cross-entropy of the global logits against the loader's (given) label.
    pred: ``(N,)`` argmax of the global logits.
    prob: ``(N, C)`` softmax of the global logits.
    embedding: ``(N, D)`` the retrieval embedding V = l2norm(concat(L, G)).
    """
    loss: np.ndarray
    pred: np.ndarray
    prob: np.ndarray
    embedding: np.ndarray


def per_sample_pass(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                    progress: bool = True, hflip: bool = False) -> SamplePassResult:
    """The per-sample pass of the robust stages and ``tools/relabel.py``: loss, prediction,
    probabilities and embedding of every sample of a prepared loader with evaluation transforms
    (see :func:`predict`). With ``hflip`` (``robust.pass_hflip``) loss, prediction and
    probabilities come from the logits averaged with the mirrored image's."""
    arrays = predict(model, loader, accelerator, ("loss", "prob", "embedding"), hflip_tta=hflip,
                     desc="per-sample pass", progress=progress)
    return SamplePassResult(loss=arrays["loss"], pred=arrays["prob"].argmax(1), prob=arrays["prob"],
                            embedding=arrays["embedding"])


def classification_metrics(logits: np.ndarray, labels: np.ndarray,
                           class_names: Sequence[str]) -> dict:
    """Accuracy, mean class accuracy, macro F1, per-class accuracy and the confusion matrix."""
    num_classes = len(class_names)
    preds = logits.argmax(1)
    cm = confusion_matrix(labels, preds, labels=list(range(num_classes)))
    support = cm.sum(1)
    per_class = np.where(support > 0, np.diag(cm) / np.maximum(support, 1), np.nan)
    return {
        "accuracy": float((preds == labels).mean()),
        "mean_class_accuracy": float(np.nanmean(per_class)),
        "macro_f1": float(f1_score(labels, preds, labels=list(range(num_classes)), average="macro",
                                   zero_division=0)),
        "num_samples": int(len(labels)),
        "per_class_accuracy": {name: (None if np.isnan(a) else float(a))
                               for name, a in zip(class_names, per_class)},
        "confusion_matrix": cm.tolist(),
        "class_names": list(class_names),
    }


def save_confusion_png(cm: np.ndarray | list, class_names: Sequence[str], path: str | Path,
                       title: str = "") -> None:
    """Row-normalised confusion matrix as a PNG (counts in the cells), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fer_robust.utils import atomic_path

    cm = np.asarray(cm, dtype=np.float64)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
