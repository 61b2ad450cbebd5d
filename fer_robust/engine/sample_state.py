"""Per-sample training state, indexed by dataset index.

Every decision the trainer makes about a training image lives here as one row of an array:
which label it trains on and with what weight, its clean probability from the GMM split, the
soft label retrieval relabelling gave it, and the hard label a peer's relabelling gave it (SCN).
The arrays are saved every epoch (``samples/epoch_XXX.npz``)
so each decision can be audited, and with every checkpoint so ``--resume`` continues exactly.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from fer_robust.robust.selection import RobustDecision

__all__ = ["SampleState"]


@dataclass
class SampleState:
    """Arrays of length N (training-set size).

    Attributes:
        given_labels: ``(N,)`` int64, the labels training was given (noisy when noise is injected).
        true_labels: ``(N,)`` int64 or ``None``; known only for injected/annotator noise, used for
            reporting alone, never for training.
        train_labels: ``(N,)`` int64, the hard label the ``ce`` term trains each sample on: its
            given label, unless a method relabels it (SCN, :mod:`fer_robust.methods.scn`). Stages
            never change it.
        ce_weight: ``(N,)`` weight of the cross-entropy on the given label (1 clean, 0 excluded).
        soft_labels: ``(N, C)`` soft targets from retrieval relabelling (zeros where none).
        soft_weight: ``(N,)`` weight of the soft cross-entropy on ``soft_labels``.
        clean_prob: ``(N,)`` posterior of the low-loss GMM component (NaN before the first split).
        clean_mask: ``(N,)`` bool, the split's decision.
        relabeled_mask: ``(N,)`` bool, noisy samples that train on their soft label.
    """
    given_labels: np.ndarray
    num_classes: int
    true_labels: np.ndarray | None = None
    train_labels: np.ndarray = field(default=None)
    ce_weight: np.ndarray = field(default=None)
    soft_labels: np.ndarray = field(default=None)
    soft_weight: np.ndarray = field(default=None)
    clean_prob: np.ndarray = field(default=None)
    clean_mask: np.ndarray = field(default=None)
    relabeled_mask: np.ndarray = field(default=None)

    def __post_init__(self):
        n = len(self.given_labels)
        self.given_labels = np.asarray(self.given_labels, dtype=np.int64)
        if self.train_labels is None:
            self.train_labels = self.given_labels.copy()
        if self.ce_weight is None:
            self.ce_weight = np.ones(n, np.float32)
        if self.soft_labels is None:
            self.soft_labels = np.zeros((n, self.num_classes), np.float32)
        if self.soft_weight is None:
            self.soft_weight = np.zeros(n, np.float32)
        if self.clean_prob is None:
            self.clean_prob = np.full(n, np.nan, np.float32)
        if self.clean_mask is None:
            self.clean_mask = np.ones(n, bool)
        if self.relabeled_mask is None:
            self.relabeled_mask = np.zeros(n, bool)

    def __len__(self) -> int:
        return len(self.given_labels)

    @property
    def noise_known(self) -> bool:
        return self.true_labels is not None

    @property
    def changed_mask(self) -> np.ndarray | None:
        """Samples whose given label differs from the true one (when known)."""
        return None if self.true_labels is None else self.given_labels != self.true_labels

    def reset_to_given(self) -> None:
        """Every sample trains on its label with weight 1 and no soft label (warm-up); a method's
        hard relabelling (``train_labels``) is kept."""
        self.ce_weight[:] = 1.0
        self.soft_weight[:] = 0.0
        self.relabeled_mask[:] = False

    def apply_decision(self, decision: "RobustDecision") -> None:
        """Train on a robust decision: the samples the split calls clean keep their given label
        (cross-entropy weight 1, the others 0); the relabelled ones train on their soft label.
        The soft labels of every retrieved sample are kept (zeros elsewhere) for the record, so
        :meth:`RobustDecision.from_sample_arrays` reads the decision back."""
        self.clean_prob = decision.clean_prob
        self.clean_mask = decision.clean_mask
        self.ce_weight = decision.clean_mask.astype(np.float32)
        self.soft_labels = np.where(decision.retrieved_mask[:, None], decision.soft_labels, 0.0
                                    ).astype(np.float32)
        self.relabeled_mask = decision.relabeled_mask
        self.soft_weight = decision.relabeled_mask.astype(np.float32)

    def batch_targets(self, index: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The rows of a batch (by dataset index) as tensors on ``device``."""
        idx = index.cpu().numpy()
        return {
            "labels": torch.from_numpy(self.train_labels[idx]).to(device),
            "ce_weight": torch.from_numpy(self.ce_weight[idx]).to(device),
            "soft_labels": torch.from_numpy(self.soft_labels[idx]).to(device),
            "soft_weight": torch.from_numpy(self.soft_weight[idx]).to(device),
        }

    # -- persistence (safetensors-friendly: tensors only) -----------------------------------------
    _ARRAYS = ("given_labels", "true_labels", "train_labels", "ce_weight", "soft_labels",
               "soft_weight", "clean_prob", "clean_mask", "relabeled_mask")

    def state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name in self._ARRAYS:
            value = getattr(self, name)
            if value is not None:
                out[name] = torch.from_numpy(np.ascontiguousarray(value))
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for f in fields(self):
            if f.name in state:
                setattr(self, f.name, state[f.name].numpy().copy())

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {k: v.numpy() for k, v in self.state_dict().items()}
