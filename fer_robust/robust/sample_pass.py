"""The per-sample pass: loss, prediction and embedding of every training image, by index."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from fer_robust.engine.distributed import gather_by_index

__all__ = ["SamplePassResult", "per_sample_pass"]


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


@torch.no_grad()
def per_sample_pass(model: torch.nn.Module, loader: DataLoader, accelerator: Accelerator,
                    num_samples: int, num_classes: int, embed_dim: int,
                    progress: bool = True) -> SamplePassResult:
    """One pass over a prepared loader with evaluation transforms and the model in eval mode.

    Each process computes its shard; ``(index, value)`` pairs are gathered and scattered into
    arrays by dataset index, so padded duplicates of the sharded loader overwrite identical rows and
    every process ends with the same arrays. Every index must be visited: a sample the loader never
    yields is an error rather than a silent zero.
    """
    was_training = model.training
    model.eval()
    arrays = {
        "loss": np.full(num_samples, np.nan, np.float32),
        "prob": np.zeros((num_samples, num_classes), np.float32),
        "embedding": np.zeros((num_samples, embed_dim), np.float32),
    }
    seen = np.zeros(num_samples, bool)
    bar = tqdm(loader, desc="per-sample pass", leave=False,
               disable=not (progress and accelerator.is_local_main_process))
    for images, labels, index in bar:
        out = model(images)
        logits = out["logits"].float()
        loss = F.cross_entropy(logits, labels, reduction="none")
        gather_by_index(accelerator, index, {"loss": loss, "prob": logits.softmax(1),
                                             "embedding": out["embedding"].float()}, arrays)
        seen[accelerator.gather(index.to(accelerator.device)).cpu().numpy()] = True
    if not seen.all():
        raise RuntimeError(f"per-sample pass missed {int((~seen).sum())} of {num_samples} samples")
    model.train(was_training)
    return SamplePassResult(loss=arrays["loss"], pred=arrays["prob"].argmax(1),
                            prob=arrays["prob"], embedding=arrays["embedding"])
