"""CPU latency per image of the PyTorch model and of its ONNX export under onnxruntime.

    python benchmarks/onnx_latency.py                       # demo, FERPlus benchmark, RAF-DB recipes
    python benchmarks/onnx_latency.py --checkpoint runs/demo --threads 1

For each recipe the eval-mode model (random weights: the time does not depend on them; a
``--checkpoint`` gives a trained one) is exported with ``tools/export.py``'s code and checked,
then both paths classify batches of 1 and of 32 normalised images, model only (no decoding, no
resizing): ``torch.inference_mode()`` with ``torch.set_num_threads(t)`` against an onnxruntime
session with ``intra_op_num_threads=t``. Each figure is the median over ``--repeats`` timed calls
after ``--warmup`` untimed ones, in milliseconds per image. The machine's load average is saved
with the figures: on a shared machine they are upper bounds.

Results go to ``benchmarks/results/onnx_latency.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from fer_robust.validation import load_config  # noqa: E402
from fer_robust.data.dataset_facts import DATASET_SPECS  # noqa: E402
from fer_robust.deploy.classifiers import OnnxClassifier  # noqa: E402
from fer_robust.deploy.onnx_export import check_onnx, export_onnx  # noqa: E402
from fer_robust.engine.inference import load_trained_model  # noqa: E402
from fer_robust.models.factory import build_model  # noqa: E402
from fer_robust.provenance import provenance, repo_relative  # noqa: E402
from fer_robust.utils import atomic_write_json  # noqa: E402

RECIPES = ["configs/demo.yaml", "configs/benchmark_ferplus.yaml", "configs/rafdb.yaml"]


def median_ms_per_image(call, batch: int, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return round(1000 * statistics.median(times) / batch, 3)


def measure(name: str, model, img_size: int, threads: list[int], batches: list[int],
            exporter: str, warmup: int, repeats: int) -> dict:
    model = model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        start = time.perf_counter()
        export_onnx(model, path, img_size, {"classes": [str(k) for k in range(model.num_classes)],
                                            "img_size": img_size, "mean": [0, 0, 0],
                                            "std": [1, 1, 1]}, exporter=exporter)
        export_s = time.perf_counter() - start
        images = torch.randn(max(batches), 3, img_size, img_size)
        check = check_onnx(path, model, images, batch_sizes=batches)
        result = {"recipe": name, "img_size": img_size, "backbone": model.cfg.backbone,
                  "arch": model.cfg.arch, "params_m": round(sum(p.numel() for p in
                                                                model.parameters()) / 1e6, 2),
                  "exporter": exporter, "export_s": round(export_s, 1),
                  "max_abs_logit_diff": max(r["max_abs_logit_diff"]
                                            for r in check["batch_sizes"].values()),
                  "ms_per_image": {}}
        for t in threads:
            torch.set_num_threads(t)
            runtime = OnnxClassifier(path, threads=t)
            for n in batches:
                x = images[:n]
                x_np = x.numpy()

                def run_torch():
                    with torch.inference_mode():
                        model(x)

                def run_onnx():
                    runtime.session.run(["logits"], {runtime.input_name: x_np})

                torch_ms = median_ms_per_image(run_torch, n, warmup, repeats)
                onnx_ms = median_ms_per_image(run_onnx, n, warmup, repeats)
                result["ms_per_image"][f"threads{t}_batch{n}"] = {
                    "pytorch": torch_ms, "onnxruntime": onnx_ms,
                    "speedup": round(torch_ms / onnx_ms, 2)}
                print(f"{name} {img_size}px threads {t} batch {n:>2}: PyTorch {torch_ms:8.2f} "
                      f"ms/image, onnxruntime {onnx_ms:8.2f} ms/image ({torch_ms / onnx_ms:.2f}x)")
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=RECIPES)
    parser.add_argument("--checkpoint", default=None, help="a trained run instead of --configs")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--exporter", default="dynamo", choices=["dynamo", "legacy"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "onnx_latency.json"))
    args = parser.parse_args(argv)

    origin = provenance(argv, __file__, cpu=True)
    load_before = os.getloadavg()
    results = []
    if args.checkpoint:
        cfg, model, _, _ = load_trained_model(args.checkpoint)
        results.append(measure(repo_relative(args.checkpoint), model, cfg.data.img_size,
                               args.threads, args.batches, args.exporter, args.warmup,
                               args.repeats))
    else:
        for config in args.configs:
            cfg = load_config(REPO / config, ["model.pretrained_file=none"])
            model_cfg = dataclasses.replace(cfg.model, pretrained=False, pretrained_file="none")
            num_classes = DATASET_SPECS[cfg.data.name].num_classes
            torch.manual_seed(0)
            model = build_model(model_cfg, num_classes, cfg.data.img_size)
            results.append(measure(repo_relative(REPO / config), model, cfg.data.img_size,
                                   args.threads, args.batches, args.exporter, args.warmup,
                                   args.repeats))
    report = {
        "provenance": origin,
        "what": "CPU latency per image, model only (normalised input), median of repeats",
        "results": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "onnxruntime": __import__("onnxruntime").__version__,
                    "load_average_before": [round(v, 2) for v in load_before],
                    "load_average_after": [round(v, 2) for v in os.getloadavg()]},
    }
    atomic_write_json(args.out, report)
    print(f"saved {args.out} (load average {report['machine']['load_average_after'][0]:.1f} "
          f"on {os.cpu_count()} cores)")
    return report


if __name__ == "__main__":
    main()
