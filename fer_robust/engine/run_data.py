"""The data a run trains on: its training and validation splits, the label noise injected into
the training split, and the same training images under evaluation transforms (for the per-sample
pass)."""
from __future__ import annotations

import copy

import numpy as np

from fer_robust.config import Config, ConfigError
from fer_robust.data.base import FERDataset
from fer_robust.data.dataset_facts import confusable_targets
from fer_robust.data.noise import inject_label_noise
from fer_robust.data.registry import build_dataset
from fer_robust.data.transforms import build_transform
from fer_robust.engine.protocol import has_validation

__all__ = ["load_datasets", "eval_view", "apply_label_noise"]


def load_datasets(cfg: Config) -> tuple[FERDataset, FERDataset | None]:
    """(train with train transforms, val) for a config; val is None under a protocol without a
    validation split (``data.protocol=full_train``)."""
    train = build_dataset(cfg.data, "train", build_transform(cfg.data, train=True))
    val = None
    if has_validation(cfg.data.protocol):
        val = build_dataset(cfg.data, "val", build_transform(cfg.data, train=False))
    return train, val


def eval_view(dataset: FERDataset, cfg: Config) -> FERDataset:
    """The same samples and (current, possibly noisy) labels with evaluation transforms."""
    view = copy.copy(dataset)
    view.transform = build_transform(cfg.data, train=False)
    return view


def apply_label_noise(cfg: Config, train: FERDataset) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Inject the configured noise into ``train``; returns (true labels, changed mask) or Nones.
    ``data.noise.type=file`` reads the labels from ``data.noise.file``
    (:mod:`fer_robust.data.noise_file`)."""
    if cfg.data.noise.file.strip() and cfg.data.noise.type != "file":
        raise ConfigError(f"'data.noise.file' is set but data.noise.type is "
                          f"{cfg.data.noise.type!r}: set data.noise.type=file to train on it")
    if cfg.data.noise.type == "none":
        return None, None
    if cfg.data.noise.type == "file":
        from fer_robust.data.noise_file import noisy_targets_from_file
        true = train.clean_targets.copy()
        noisy, _ = noisy_targets_from_file(cfg.data, train)
        train.set_targets(noisy)
        return true, noisy != true
    confusable = None
    if cfg.data.noise.type == "asymmetric":
        try:
            confusable = confusable_targets(train.classes)
        except ValueError:  # class names that are not emotions (user folders): c -> c + 1
            confusable = None
    true = train.clean_targets.copy()
    noisy, changed = inject_label_noise(true, train.num_classes, cfg.data.noise, votes=train.votes,
                                        confusable=confusable)
    train.set_targets(noisy)
    return true, changed
