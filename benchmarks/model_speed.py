"""Training-step speed of the two-branch model against the baseline, on CPU.

One step = forward + loss + backward (no optimiser update, which is the same for both up to the
head parameters). The full model runs as in training: ``mim=True`` (half the batch masked, one
backbone pass, the decoder on the masked half), loss = CE + local CE + MIM + an embedding term.
The baseline's loss is CE. Steps of the two models alternate, so load from other processes hits
both alike, and the median step time is reported.

Usage::

    python benchmarks/model_speed.py [--backbone resnet18] [--sizes 64 112] [--batch-size 64]
        [--threads 2] [--warmup 2] [--iters 6] [--out benchmarks/results/model_speed.json]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from fer_robust.config import ModelConfig  # noqa: E402
from fer_robust.models import build_model  # noqa: E402
from fer_robust.provenance import provenance  # noqa: E402
from fer_robust.utils import atomic_write_json  # noqa: E402

NUM_CLASSES = 7


def training_loss(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss a training step of ``model`` computes (all terms the model offers)."""
    out = model(images, mim=True)
    loss = F.cross_entropy(out["logits"], labels)
    if "local_logits" in out:
        loss = loss + 0.5 * F.cross_entropy(out["local_logits"], labels)
    if "mim_loss" in out:
        loss = loss + out["mim_loss"]
        # Stand-in for the contrastive term: it reads the embedding as that loss does.
        emb = out["embedding"]
        loss = loss + 0.1 * (emb @ emb.T).mean()
    return loss


def step_seconds(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Wall time of one forward + backward."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    training_loss(model, images, labels).backward()
    return time.perf_counter() - start


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def measure(backbone: str, img_size: int, batch_size: int, warmup: int, iters: int) -> dict:
    """Median step time and images/s of the baseline and the full model at one input size."""
    cfg = ModelConfig(backbone=backbone)
    models = {
        "baseline": build_model(dataclasses.replace(cfg, arch="baseline"), NUM_CLASSES, img_size),
        "two_branch": build_model(cfg, NUM_CLASSES, img_size),
    }
    for model in models.values():
        model.train()
    images = torch.randn(batch_size, 3, img_size, img_size)
    labels = torch.randint(0, NUM_CLASSES, (batch_size,))
    times: dict[str, list[float]] = {name: [] for name in models}
    for i in range(warmup + iters):
        for name, model in models.items():  # alternate, so background load hits both alike
            seconds = step_seconds(model, images, labels)
            if i >= warmup:
                times[name].append(seconds)
    rows = {}
    for name, model in models.items():
        median = statistics.median(times[name])
        rows[name] = {"step_s": median, "images_per_s": batch_size / median,
                      "params": count_parameters(model), "all_step_s": times[name]}
    rows["ratio"] = rows["two_branch"]["step_s"] / rows["baseline"]["step_s"]
    return rows


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a Markdown table and save the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 112])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=6)
    parser.add_argument("--out", default="benchmarks/results/model_speed.json")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"provenance": provenance(argv, __file__, cpu=True),
               "backbone": args.backbone, "batch_size": args.batch_size, "threads": args.threads,
               "warmup": args.warmup, "iters": args.iters, "torch": torch.__version__,
               "machine": platform.processor() or platform.machine(), "sizes": {}}
    lines = ["| input | model | params | step (s) | images/s | step vs baseline |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for size in args.sizes:
        rows = measure(args.backbone, size, args.batch_size, args.warmup, args.iters)
        results["sizes"][str(size)] = rows
        for name in ("baseline", "two_branch"):
            r = rows[name]
            ratio = r["step_s"] / rows["baseline"]["step_s"]
            lines.append(f"| {size} px | {name} | {r['params'] / 1e6:.2f} M | {r['step_s']:.3f} | "
                         f"{r['images_per_s']:.1f} | {ratio:.2f}x |")
    table = "\n".join(lines)
    print(f"{args.backbone}, batch {args.batch_size}, {args.threads} threads, forward+backward "
          f"(median of {args.iters})\n")
    print(table)
    results["table"] = table
    atomic_write_json(args.out, results)
    print(f"\nsaved {args.out}")
    return results


if __name__ == "__main__":
    main()
