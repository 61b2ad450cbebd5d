"""Loading backbone weights from a local file, with no network.

FER papers start from weights that timm does not host, most often a ResNet-18 trained on
MS-Celeb-1M face identities (SCN, RUL, EAC, ARM). Those checkpoints come in many wrappings: a bare
state dict, ``{'state_dict': ...}`` or ``{'model': ...}``, keys prefixed by ``module.`` (saved from
``DataParallel``), an identity classifier (``fc.*`` with thousands of classes) and extra entries.
:func:`load_pretrained_file` unwraps all of these, drops the classifier, loads what fits with
``strict=False`` and returns a :class:`LoadReport`. Files that do not fit the architecture (a
tensor of the wrong shape, or hardly any key in common) fail with a :class:`PretrainedFileError`
that names the file, instead of silently training from scratch.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

__all__ = ["PretrainedFileError", "LoadReport", "read_state_dict", "load_pretrained_file"]

_logger = logging.getLogger(__name__)

# Keys under which training scripts nest the weights, tried in this order.
_NESTING_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "network",
                 "module")
# Prefixes added by wrappers (DataParallel/DDP, EMA, a model held as attribute of a bigger one).
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "base_model.", "_orig_mod.")
# Classifier names of common architectures; an identity or ImageNet classifier is never wanted.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "head.", "last_linear.", "logits.")


class PretrainedFileError(ValueError):
    """A local weight file cannot be read or does not fit the architecture (message names it)."""


@dataclass
class LoadReport:
    """What :func:`load_pretrained_file` did with each tensor of the file.

    Attributes:
        path: the file.
        loaded: model keys whose values were copied from the file.
        missing: model keys the file did not provide (they keep their initialisation).
        unexpected: file keys (after prefix stripping) the model has no place for.
        dropped_classifier: file keys recognised as a classifier and dropped.
        stripped_prefix: the wrapper prefix removed from the file's keys ('' if none).
    """
    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_classifier: list[str] = field(default_factory=list)
    stripped_prefix: str = ""

    def summary(self) -> str:
        """One paragraph for the log, listing the first few missing and unexpected keys."""
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")
        lines = [f"loaded {len(self.loaded)}/{len(self.loaded) + len(self.missing)} tensors from "
                 f"{self.path} (prefix stripped: {self.stripped_prefix or 'none'}; classifier "
                 f"keys dropped: {len(self.dropped_classifier)})"]
        if self.missing:
            lines.append(f"missing in file: {head(self.missing)}")
        if self.unexpected:
            lines.append(f"unused from file: {head(self.unexpected)}")
        return "\n".join(lines)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{key: tensor}`` dict on CPU.

    ``.safetensors`` files are read with safetensors; anything else with
    ``torch.load(weights_only=True)`` (no arbitrary code runs). Nested checkpoints
    (``{'state_dict': ...}``, ``{'model': ...}``, ...) are unwrapped and non-tensor entries
    (epoch counters, optimiser state) are dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedFileError(f"pretrained weight file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise PretrainedFileError(f"cannot read pretrained weight file {path}: {e}") from e
    # Unwrap nesting until the values are tensors.
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise PretrainedFileError(f"{path}: expected a state dict, found {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise PretrainedFileError(f"{path}: no tensors found (top-level keys: {list(obj)[:10]})")
    return state


def _strip_prefix(state: dict[str, torch.Tensor], model_keys: set[str]) -> tuple[dict, str]:
    """Remove the wrapper prefix (possibly repeated, e.g. ``module.model.``) that makes the most
    file keys match the model's keys."""
    stripped_total = ""
    while True:
        best, best_hits = "", sum(k in model_keys for k in state)
        for prefix in _WRAPPER_PREFIXES:
            if not any(k.startswith(prefix) for k in state):
                continue
            hits = sum(k[len(prefix):] in model_keys for k in state if k.startswith(prefix))
            if hits > best_hits:
                best, best_hits = prefix, hits
        if not best:
            return state, stripped_total
        state = {(k[len(best):] if k.startswith(best) else k): v for k, v in state.items()}
        stripped_total += best


def load_pretrained_file(model: nn.Module, path: str | os.PathLike,
                         min_loaded_fraction: float = 0.5) -> LoadReport:
    """Load a local weight file into ``model`` (a timm backbone built with ``num_classes=0``).

    Steps: read (:func:`read_state_dict`), strip wrapper prefixes, drop classifier keys the model
    has no slot for, check shapes, ``load_state_dict(strict=False)``, log the report.

    Args:
        model: the network to fill.
        path: ``.pth``/``.pt``/``.bin``/``.safetensors`` file.
        min_loaded_fraction: below this share of the model's tensors found in the file, the file is
            taken to be for another architecture and an error is raised.

    Returns:
        The :class:`LoadReport`.

    Raises:
        PretrainedFileError: unreadable file, a tensor whose shape does not fit, or too few matches.
    """
    path = str(path)
    state = read_state_dict(path)
    target = model.state_dict()
    model_keys = set(target)
    state, prefix = _strip_prefix(state, model_keys)

    report = LoadReport(path=path, stripped_prefix=prefix)
    usable: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if key in model_keys:
            if tuple(value.shape) != tuple(target[key].shape) and key.startswith(
                    _CLASSIFIER_PREFIXES):
                report.dropped_classifier.append(key)  # a head for another number of classes
            elif tuple(value.shape) != tuple(target[key].shape):
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model "
                                  f"{tuple(target[key].shape)}")
            else:
                usable[key] = value
        elif key.startswith(_CLASSIFIER_PREFIXES):
            report.dropped_classifier.append(key)
        else:
            report.unexpected.append(key)
    if mismatched:
        raise PretrainedFileError(
            f"pretrained weight file {path} does not fit the architecture: {len(mismatched)} "
            f"tensor(s) have the wrong shape, e.g. {'; '.join(mismatched[:3])}")

    # BatchNorm's num_batches_tracked is bookkeeping, not a weight: it does not count as missing.
    report.loaded = sorted(usable)
    report.missing = sorted(k for k in model_keys - set(usable)
                            if not k.endswith("num_batches_tracked"))
    counted = [k for k in model_keys if not k.endswith("num_batches_tracked")]
    loaded = [k for k in usable if not k.endswith("num_batches_tracked")]
    fraction = len(loaded) / max(1, len(counted))
    if fraction < min_loaded_fraction:
        raise PretrainedFileError(
            f"pretrained weight file {path} does not match the architecture: only {len(loaded)} of "
            f"{len(counted)} model tensors found in it (file keys look like "
            f"{', '.join(list(state)[:3])}; model keys like {', '.join(sorted(model_keys)[:3])})")

    model.load_state_dict(usable, strict=False)
    _logger.info(report.summary())
    return report
