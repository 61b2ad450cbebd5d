"""Evaluation: predictions over a split and the classification metrics reported by FER papers."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from sklearn.metrics import confusion_matrix, f1_score
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

__all__ = ["tta_logits", "predict_logits", "classification_metrics", "save_confusion_png"]


def tta_logits(model: torch.nn.Module, images: torch.Tensor, hflip: bool = False) -> torch.Tensor:
    """Logits ``(N, C)`` of an eval-mode model, averaged with the mirrored images' if ``hflip``."""
    logits = model(images)["logits"].float()
    if hflip:
        logits = 0.5 * (logits + model(torch.flip(images, dims=[3]))["logits"].float())
    return logits


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                   hflip_tta: bool = False, desc: str = "eval",
                   progress: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits for every sample of a prepared, ordered loader.

    Returns ``(logits (N, C), labels (N,), index (N,))`` in dataset order on every process. The
    model is in eval mode, so ARM uses its running affinity and predictions do not depend on the
    batch size or on the other images in a batch. With ``hflip_tta`` the logits of the image and its
    mirror are averaged.
    """
    model.eval()
    outs, labels, idxs = [], [], []
    bar = tqdm(loader, desc=desc, leave=False,
               disable=not (progress and accelerator.is_local_main_process))
    for images, targets, index in bar:
        logits = tta_logits(model, images, hflip_tta)
        logits, targets, index = accelerator.gather_for_metrics((logits, targets, index))
        outs.append(logits.cpu())
        labels.append(targets.cpu())
        idxs.append(index.cpu())
    logits = torch.cat(outs).numpy()
    labels = torch.cat(labels).numpy()
    index = torch.cat(idxs).numpy()
    order = np.argsort(index, kind="stable")
    return logits[order], labels[order], index[order]


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
