"""Loading backbone weights from a local file, with no network.

FER papers start from face-recognition weights that timm does not host. Two files dominate the
noisy-label line of work, and both load into timm's ``resnet18`` / ``resnet50`` as they are:

- ``ijba_res18_naive.pth.tar`` (SCN, RUL, DMUE and their descendants): the "naive" ResNet-18 of
  DREAM (Cao et al., CVPR 2018; ``penincillin/DREAM``, ``src/IJBA/ResNet.py`` and
  ``src/end2end/main.py``), trained on MS-Celeb-1M identities. A ``torch.save`` of
  ``{'epoch', 'arch', 'state_dict', 'best_prec1', 'optimizer'}`` whose ``state_dict`` comes from
  ``DataParallel``: keys ``module.conv1.weight``, ``module.bn1.*``, ``module.layer1.0.conv1.weight``
  ... ``module.layer4.1.bn2.*`` (torchvision's ResNet-18 names, hence timm's), then two head layers:
  ``module.feature.{weight,bias}`` (a 512 -> 256 embedding) and ``module.fc.{weight,bias}`` (256 ->
  87,020 identities). The blocks match torchvision's exactly (stride on the 3x3 convolution,
  max-pool padding 1). It holds tensors, numbers and strings only, so it reads with
  ``torch.load(weights_only=True)``. DREAM fed it RGB in [0, 1] without normalisation; SCN and its
  successors fine-tune it on ImageNet-normalised RGB, as we do.
- ``resnet50_ft_weight.pkl`` (EAC; ``zyh-uaiaaaa/Erasing-Attention-Consistency``, ``src/model.py``):
  the VGGFace2 ResNet-50 (MS-Celeb-1M, then fine-tuned on VGGFace2), converted from Caffe by
  ``cydonia999/VGGFace2-pytorch`` (``models/resnet.py``, ``utils.load_state_dict``). A Python-2
  pickle of ``{name: numpy.ndarray}`` (read with ``encoding='latin1'``), no nesting, no prefix, no
  ``num_batches_tracked``: ``conv1.weight``, ``bn1.{weight,bias,running_mean,running_var}``,
  ``layer{1-4}.{i}.{conv1,bn1,conv2,bn2,conv3,bn3}.*``, ``layer{1-4}.0.downsample.{0,1}.*`` and
  ``fc.{weight,bias}`` (2048 -> 8,631 identities). The names and shapes are timm's ``resnet50``'s,
  so it loads, but the network is not quite the same one. It is Caffe's ResNet: each stage's first
  bottleneck strides in its 1x1 ``conv1``, not in the 3x3 ``conv2`` as timm (and torchvision) do,
  and its stem max-pool has padding 0 with ``ceil_mode`` (the same 56x56 output at 224 px, shifted
  by one pixel). The loaded filters therefore see a slightly different sampling grid than they were
  trained on. Fine-tuning absorbs this (EAC fine-tunes the same way, on ImageNet-normalised RGB,
  although the Caffe model was trained on BGR minus a per-channel mean on a 0-255 scale). timm has
  no Caffe-stride ResNet-50 (``resnet50c``, ``resnet50d``, ``resnet50s`` and ``resnet50t`` change
  the stem; ``resnet50_gn`` the normalisation): moving each stage's first stride from ``conv2`` to
  ``conv1`` would reproduce it exactly, and nothing here does that.

A network this package saved (a run's ``best_model.safetensors``, a checkpoint's
``model.safetensors``) loads too: its backbone's tensors (``backbone.model.*``) fill the backbone and
the rest (heads for its own classes, ARM pooling, MIM decoder) is dropped, so a run can initialise
another, with another number of classes.

Unpickling a file can run arbitrary code, so a ``.pkl``/``.pickle`` file, or a torch file that
``torch.load(weights_only=True)`` refuses, is only read with ``allow_pickle=True`` (config:
``model.allow_pickle``). Otherwise :func:`load_pretrained_file` unwraps the usual wrappings (a bare
state dict, ``{'state_dict': ...}`` or ``{'model': ...}``, keys prefixed by ``module.``), drops the
identity head, loads what fits with ``strict=False`` and returns a :class:`LoadReport`. Files that
do not fit the architecture (a tensor of the wrong shape, or hardly any key in common) fail with a
:class:`PretrainedFileError` that names the file, instead of silently training from scratch.
"""
from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["PretrainedFileError", "LoadReport", "NO_PRETRAINED_FILE", "resolve_pretrained_file",
           "read_state_dict", "load_pretrained_file"]

_logger = logging.getLogger(__name__)

# ``model.pretrained_file=none`` says, on purpose, that no file is loaded (train from scratch).
NO_PRETRAINED_FILE = "none"

# Keys under which training scripts nest the weights, tried in this order.
_NESTING_KEYS = ("state_dict", "model", "model_state", "model_state_dict", "net", "network",
                 "module")
# Prefixes added by wrappers (DataParallel/DDP, EMA, a model held as attribute of a bigger one).
_WRAPPER_PREFIXES = ("module.", "model.", "backbone.", "encoder.", "base_model.", "_orig_mod.")
# Classifier names of common architectures; an identity or ImageNet classifier is never wanted.
_CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "head.", "last_linear.", "logits.")
# Where a network of this package keeps its backbone (a run's best_model.safetensors, a checkpoint's
# model.safetensors): the rest of such a file (heads, ARM pooling, MIM decoder) belongs to the
# network around the backbone and is dropped, so one run can initialise another.
OWN_BACKBONE_PREFIX = "backbone.model."
# Suffixes of files that are plain pickles (never read without allow_pickle).
_PICKLE_SUFFIXES = (".pkl", ".pickle")
# How many identities the VGGFace2 models were trained on (cydonia999/VGGFace2-pytorch).
VGGFACE2_NUM_IDENTITIES = 8631


class PretrainedFileError(ValueError):
    """A local weight file cannot be read or does not fit the architecture (message names it)."""


def resolve_pretrained_file(value: str) -> str:
    """The file to load for a ``model.pretrained_file`` value: ``''`` for none.

    ``''`` (not set) and ``'none'`` (any case: the explicit opt-out) both mean no file.
    """
    value = (value or "").strip()
    return "" if value.lower() == NO_PRETRAINED_FILE else value


@dataclass
class LoadReport:
    """What :func:`load_pretrained_file` did with each tensor of the file.

    Attributes:
        path: the file.
        format: how the file was read: ``'safetensors'``, ``'torch'`` (``weights_only=True``),
            ``'torch (unrestricted pickle)'`` or ``'pickle'`` (both need ``allow_pickle``), followed
            by the nesting key (``"['state_dict']"``) and ``'numpy arrays'`` where they apply.
        layout: the known checkpoint the keys were recognised as ('' if none), e.g. the DREAM
            MS-Celeb-1M ResNet or the VGGFace2 Caffe ResNet.
        loaded: model keys whose values were copied from the file.
        missing: model keys the file did not provide (they keep their initialisation).
        unexpected: file keys (after prefix stripping) the model has no place for.
        dropped_classifier: file keys recognised as a classifier or identity head and dropped.
        stripped_prefix: the wrapper prefix removed from the file's keys ('' if none).
    """
    path: str
    format: str = ""
    layout: str = ""
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    dropped_classifier: list[str] = field(default_factory=list)
    stripped_prefix: str = ""

    def describe(self) -> str:
        """One line for the run's records:
        ``file:<path> (<loaded>/<total> tensors, format <fmt>)``."""
        fmt = self.format + (f", {self.layout}" if self.layout else "")
        total = len(self.loaded) + len(self.missing)
        return f"file:{self.path} ({len(self.loaded)}/{total} tensors, format {fmt})"

    def summary(self) -> str:
        """One paragraph for the log: the counts, then the first few missing and unexpected keys."""
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f", ... (+{len(keys) - 5})" if len(keys) > 5 else "")
        what = self.format + (f"; {self.layout}" if self.layout else "")
        lines = [f"pretrained weights {self.path} ({what}): {len(self.loaded)} matched, "
                 f"{len(self.missing)} missing, {len(self.unexpected)} unexpected, "
                 f"{len(self.dropped_classifier)} head tensors dropped (prefix stripped: "
                 f"{self.stripped_prefix or 'none'})"]
        if self.missing:
            lines.append(f"missing in file: {head(self.missing)}")
        if self.unexpected:
            lines.append(f"unused from file: {head(self.unexpected)}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
def _pickle_refused(path: Path, why: str) -> PretrainedFileError:
    return PretrainedFileError(
        f"{path}: {why}; unpickling a file can run arbitrary code, so it is only read with "
        "model.allow_pickle=true (set it if you trust the file)")


def _refusal_reason(error: Exception) -> str:
    """The useful part of torch's long weights_only message, e.g. 'Unsupported global: GLOBAL
    numpy...' (the rest of it is advice for another audience)."""
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?:\. |\n\n|$)", str(error), re.S)
    return " ".join(found.group(1).split())[:200] if found else "not a plain tensor file"


_UNRESTRICTED_TORCH = "torch (unrestricted pickle)"


def _unpickle(path: Path) -> tuple[Any, str]:
    """Read a file with unrestricted pickle (only under ``allow_pickle``). Returns (obj, format)."""
    if zipfile.is_zipfile(path):
        return torch.load(path, map_location="cpu", weights_only=False), _UNRESTRICTED_TORCH
    with open(path, "rb") as f:
        # latin1: the VGGFace2 conversion was pickled by Python 2 (numpy arrays as byte strings).
        obj = pickle.load(f, encoding="latin1")
    if isinstance(obj, int):  # legacy torch.save: a magic number first, then the object
        return torch.load(path, map_location="cpu", weights_only=False), _UNRESTRICTED_TORCH
    return obj, "pickle"


def _read_file(path: Path, allow_pickle: bool) -> tuple[Any, str]:
    """The object stored in ``path`` and how it was read (see :attr:`LoadReport.format`)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu"), "safetensors"
        if path.suffix.lower() in _PICKLE_SUFFIXES:
            if not allow_pickle:
                raise _pickle_refused(path, "the file is a pickle")
            return _unpickle(path)
        try:
            return torch.load(path, map_location="cpu", weights_only=True), "torch"
        except pickle.UnpicklingError as e:
            if not allow_pickle:
                raise _pickle_refused(path, "torch.load(weights_only=True) refused it "
                                            f"({_refusal_reason(e)})") from None
            return _unpickle(path)
    except PretrainedFileError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure becomes one clear message
        raise PretrainedFileError(f"cannot read pretrained weight file {path}: {e}") from e


def _is_array(value: Any) -> bool:
    return isinstance(value, torch.Tensor) or (isinstance(value, np.ndarray)
                                               and value.dtype.kind in "biuf")


def _read_state_dict(path: str | os.PathLike, allow_pickle: bool = False
                     ) -> tuple[dict[str, torch.Tensor], str]:
    path = Path(path)
    if not path.is_file():
        raise PretrainedFileError(f"pretrained weight file not found: {path}")
    obj, fmt = _read_file(path, allow_pickle)
    # Unwrap nesting until the values are tensors (or numpy arrays).
    for _ in range(3):
        if not isinstance(obj, dict) or any(_is_array(v) for v in obj.values()):
            break
        key = next((k for k in _NESTING_KEYS if isinstance(obj.get(k), dict)), None)
        if key is None:
            break
        obj = obj[key]
        fmt += f" ['{key}']"
    if not isinstance(obj, dict):
        raise PretrainedFileError(f"{path}: expected a state dict, found {type(obj).__name__}")
    if any(isinstance(v, np.ndarray) for v in obj.values()):
        fmt += ", numpy arrays"
    state = {str(k): (v if isinstance(v, torch.Tensor) else torch.tensor(v))
             for k, v in obj.items() if _is_array(v)}
    if not state:
        raise PretrainedFileError(f"{path}: no tensors found (top-level keys: {list(obj)[:10]})")
    return state, fmt


def read_state_dict(path: str | os.PathLike, allow_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a weight file into a flat ``{key: tensor}`` dict on CPU.

    ``.safetensors`` files are read with safetensors; ``.pkl``/``.pickle`` files with pickle, and
    only when ``allow_pickle`` (numpy arrays become tensors); anything else with
    ``torch.load(weights_only=True)``, falling back to an unrestricted load only when
    ``allow_pickle``. Nested checkpoints (``{'state_dict': ...}``, ``{'model': ...}``, ...) are
    unwrapped and non-tensor entries (epoch counters, optimiser state) are dropped.
    """
    return _read_state_dict(path, allow_pickle)[0]


# --------------------------------------------------------------------------------------------------
# Matching to the model
# --------------------------------------------------------------------------------------------------
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


def _own_network_backbone(state: dict[str, torch.Tensor]
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The backbone's tensors of a network this package saved (keys ``backbone.model.*``, the
    prefix removed) and the keys of the rest; ``(state, [])`` for any other file."""
    if not any(k.startswith(OWN_BACKBONE_PREFIX) for k in state):
        return state, []
    backbone = {k[len(OWN_BACKBONE_PREFIX):]: v for k, v in state.items()
                if k.startswith(OWN_BACKBONE_PREFIX)}
    return backbone, sorted(k for k in state if not k.startswith(OWN_BACKBONE_PREFIX))


def _known_layout(state: dict[str, torch.Tensor], fmt: str) -> tuple[str, tuple[str, ...]]:
    """Recognise the face-recognition checkpoints FER work starts from (keys already stripped).

    Returns ``(description, extra head prefixes to drop)``; ``('', ())`` for anything else.
    """
    fc, feature = state.get("fc.weight"), state.get("feature.weight")
    if (fc is not None and feature is not None and fc.ndim == 2 and feature.ndim == 2
            and fc.shape[1] == feature.shape[0] and "layer4.0.conv1.weight" in state):
        # DREAM's naive ResNet: pooled 512 -> feature (256) -> identity fc.
        return (f"MS-Celeb-1M ResNet (DREAM layout: feature {feature.shape[1]}->{feature.shape[0]},"
                f" {fc.shape[0]} identities)", ("feature.",))
    if "numpy arrays" in fmt and fc is not None and "layer1.0.conv1.weight" in state:
        name = "VGGFace2 ResNet" if fc.shape[0] == VGGFACE2_NUM_IDENTITIES else "ResNet"
        # Only bottlenecks differ: Caffe strides in their 1x1 conv1 (see the module docstring).
        caffe = ("; Caffe-style: bottlenecks stride in conv1, timm's in conv2"
                 if "layer1.0.conv3.weight" in state else "")
        return f"{name}, VGGFace2-pytorch layout ({fc.shape[0]} identities{caffe})", ()
    return "", ()


def load_pretrained_file(model: nn.Module, path: str | os.PathLike,
                         min_loaded_fraction: float = 0.5,
                         allow_pickle: bool = False) -> LoadReport:
    """Load a local weight file into ``model`` (a timm backbone built with ``num_classes=0``).

    Steps: read (:func:`read_state_dict`), strip wrapper prefixes, recognise a known face
    checkpoint, drop classifier/identity-head keys the model has no slot for, check shapes,
    ``load_state_dict(strict=False)``, log the report.

    Args:
        model: the network to fill.
        path: ``.pth``/``.pth.tar``/``.pt``/``.bin``/``.safetensors`` file, or ``.pkl`` with
            ``allow_pickle``.
        min_loaded_fraction: below this share of the model's tensors found in the file, the file is
            taken to be for another architecture and an error is raised.
        allow_pickle: read pickles (``.pkl``, or torch files ``weights_only=True`` refuses);
            unpickling can run arbitrary code, so only for trusted files.

    Returns:
        The :class:`LoadReport`.

    Raises:
        PretrainedFileError: unreadable file, a pickle without ``allow_pickle``, a tensor whose
            shape does not fit, or too few matches.
    """
    path = str(path)
    state, fmt = _read_state_dict(path, allow_pickle)
    target = model.state_dict()
    model_keys = set(target)
    state, network_rest = _own_network_backbone(state)
    state, prefix = _strip_prefix(state, model_keys)
    layout, head_prefixes = _known_layout(state, fmt)
    head_prefixes = _CLASSIFIER_PREFIXES + head_prefixes
    if network_rest:
        prefix = OWN_BACKBONE_PREFIX + prefix
        layout = f"fer_robust network (its backbone; {len(network_rest)} tensors of its heads dropped)"

    report = LoadReport(path=path, format=fmt, layout=layout, stripped_prefix=prefix,
                        dropped_classifier=list(network_rest))
    usable: dict[str, torch.Tensor] = {}
    mismatched: list[str] = []
    for key, value in state.items():
        if key in model_keys:
            if tuple(value.shape) != tuple(target[key].shape) and key.startswith(head_prefixes):
                report.dropped_classifier.append(key)  # a head for another number of classes
            elif tuple(value.shape) != tuple(target[key].shape):
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model "
                                  f"{tuple(target[key].shape)}")
            else:
                usable[key] = value
        elif key.startswith(head_prefixes):
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
            f"pretrained weight file {path} ({fmt}) does not match the architecture: only "
            f"{len(loaded)} of {len(counted)} model tensors found in it (file keys look like "
            f"{', '.join(list(state)[:3])}; model keys like {', '.join(sorted(model_keys)[:3])})")

    model.load_state_dict(usable, strict=False)
    _logger.info(report.summary())
    return report
