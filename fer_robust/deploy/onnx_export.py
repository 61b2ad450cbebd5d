"""The inference graph of a trained model as ONNX, checked against PyTorch.

What is exported (:class:`InferenceGraph`): the eval-mode network, ``images (N, 3, S, S)`` ->
``logits (N, K)`` and ``embedding (N, D)``, with a dynamic batch axis. In eval mode ARM adds its
*running* affinity (a constant of the graph, like BatchNorm's running statistics), so an image's
outputs never depend on its batch-mates, and the MIM head is never called: its decoder is not in
the file. Adaptive pooling to more than 1x1 (the local branch's regions) is written as fixed
slices over PyTorch's own bins (:class:`StaticAdaptivePool2d`), because neither exporter translates
it when the output does not divide the map (a 3x3 map at output stride 16). ``images`` are
normalised as training's evaluation transform makes them; the metadata
entry ``fer_robust`` (JSON) carries the class names, input size, mean and std and the training
dataset's face framing, so ``tools/predict.py --onnx`` needs nothing else.

Exporter: torch 2.14's default, the ``torch.export``-based one (``dynamo=True``, needs
``onnxscript``), with ``Dim("batch")`` for the batch axis. The TorchScript-based one
(``exporter="legacy"``, ``dynamo=False``) also exports these models exactly, faster (about 2 s
instead of 15 s for a ResNet-10), but it is deprecated and warns.

:func:`check_onnx` runs onnxruntime and PyTorch on the same images at several batch sizes and
reports the largest differences; the export fails when the logits differ by more than
``tolerance`` (default 1e-4; fp32 on the CPU gives about 1e-6) or a prediction changes.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from fer_robust.deploy.classifiers import ONNX_METADATA_KEY, OnnxClassifier, softmax
from fer_robust.deploy.extras import require

__all__ = ["InferenceGraph", "StaticAdaptivePool2d", "exportable", "export_onnx", "check_onnx",
           "EXPORTERS"]

EXPORTERS = ("dynamo", "legacy")


class StaticAdaptivePool2d(nn.Module):
    """``nn.AdaptiveMaxPool2d`` / ``nn.AdaptiveAvgPool2d`` written as slices and reductions over
    PyTorch's own bins (output cell ``i`` of ``O`` over an input side ``I`` covers
    ``floor(i I / O)`` to ``ceil((i + 1) I / O)``), so it gives the same numbers.

    Neither ONNX exporter translates adaptive pooling whose output size does not divide the input
    (the local branch's 2x2 regions over a 3x3 map at output stride 16): the spatial sides are
    fixed in the graph, so the bins are too, and slices export everywhere.
    """

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        size = pool.output_size
        self.output_size = (size, size) if isinstance(size, int) else tuple(size)
        self.reduce = torch.amax if isinstance(pool, nn.AdaptiveMaxPool2d) else torch.mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` -> ``(N, C, oh, ow)``."""
        (h, w), (oh, ow) = x.shape[-2:], self.output_size
        rows = []
        for i in range(oh):
            top, bottom = (i * h) // oh, -(-(i + 1) * h // oh)
            cells = [self.reduce(x[..., top:bottom, (j * w) // ow:-(-(j + 1) * w // ow)],
                                 dim=(-2, -1)) for j in range(ow)]
            rows.append(torch.stack(cells, dim=-1))
        return torch.stack(rows, dim=-2)


def exportable(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (eval mode) whose adaptive poolings with an output larger than 1x1 are
    :class:`StaticAdaptivePool2d`; global pooling (1x1) exports as it is."""
    model = copy.deepcopy(model).eval()
    for name, module in list(model.named_modules()):
        if isinstance(module, (nn.AdaptiveMaxPool2d, nn.AdaptiveAvgPool2d)) \
                and module.output_size not in (1, (1, 1)):
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, child,
                    StaticAdaptivePool2d(module))
    return model


class InferenceGraph(nn.Module):
    """``images (N, 3, S, S)`` -> ``(logits (N, K), embedding (N, D))`` of an eval-mode model
    (an :func:`exportable` copy of it)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = exportable(model)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images)
        return out["logits"], out["embedding"]


def export_onnx(model: nn.Module, path: str | Path, img_size: int, metadata: dict,
                exporter: str = "dynamo", opset: int = 18) -> Path:
    """Write ``model``'s :class:`InferenceGraph` to ``path`` with a dynamic batch axis and the
    ``metadata`` (JSON) under :data:`~fer_robust.deploy.classifiers.ONNX_METADATA_KEY`."""
    onnx = require("onnx", "export", "ONNX export")
    if exporter == "dynamo":
        require("onnxscript", "export", "the dynamo ONNX exporter")
    elif exporter != "legacy":
        raise ValueError(f"exporter must be one of {EXPORTERS}, got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = InferenceGraph(model).eval()
    example = torch.zeros(2, 3, img_size, img_size)
    names = dict(input_names=["images"], output_names=["logits", "embedding"])
    with torch.no_grad(), warnings.catch_warnings():
        # The exporters' progress notes and deprecation notices say nothing about this model.
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            torch.onnx.export(graph, (example,), str(path), dynamo=True, opset_version=opset,
                              dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
                              verbose=False, **names)
        else:
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                              dynamic_axes={k: {0: "batch"} for k in ("images", "logits",
                                                                      "embedding")}, **names)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, json.dumps(metadata)
    proto.producer_name = "fer_robust"
    onnx.save(proto, str(path))
    return path


def check_onnx(path: str | Path, model: nn.Module, images: torch.Tensor,
               batch_sizes: Sequence[int] = (1, 32), tolerance: float = 1e-4) -> dict:
    """Compare onnxruntime with PyTorch on ``images`` (normalised ``(M, 3, S, S)``; cycled when
    fewer than a batch) for each batch size.

    Returns ``{"tolerance", "num_images", "batch_sizes": {n: {"max_abs_logit_diff",
    "max_abs_prob_diff", "max_abs_embedding_diff", "same_predictions"}}, "passed", "failures"}``;
    it fails when a logit differs by more than ``tolerance`` or a predicted class differs.
    """
    runtime = OnnxClassifier(path)
    model = model.eval()
    report: dict = {"tolerance": tolerance, "num_images": int(images.shape[0]), "batch_sizes": {}}
    failures = []
    for n in batch_sizes:
        batch = images[torch.arange(n) % images.shape[0]]
        with torch.no_grad():
            out = model(batch)
        ref_logits, ref_embedding = out["logits"].float().numpy(), out["embedding"].float().numpy()
        logits, embedding = runtime.session.run(["logits", "embedding"],
                                                {runtime.input_name: batch.numpy()})
        row = {
            "max_abs_logit_diff": float(np.abs(logits - ref_logits).max()),
            "max_abs_prob_diff": float(np.abs(softmax(logits) - softmax(ref_logits)).max()),
            "max_abs_embedding_diff": float(np.abs(embedding - ref_embedding).max()),
            "same_predictions": bool((logits.argmax(1) == ref_logits.argmax(1)).all()),
        }
        report["batch_sizes"][str(n)] = row
        if row["max_abs_logit_diff"] > tolerance or not row["same_predictions"]:
            failures.append(f"batch {n}: max |logit difference| {row['max_abs_logit_diff']:.2e}"
                            f" (tolerance {tolerance:.0e}), same predictions "
                            f"{row['same_predictions']}")
    report["passed"] = not failures
    report["failures"] = failures
    return report
