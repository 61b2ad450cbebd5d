"""Helpers of ``benchmarks/gpu_check.sh``: write a RAF-DB-layout fixture, report a run's throughput.

    python benchmarks/gpu_check.py fixture --root runs/gpu_check/rafdb --images 2048
    python benchmarks/gpu_check.py report runs/gpu_check/run_bf16

The fixture has RAF-DB's real layout (``EmoLabel/list_patition_label.txt`` and
``Image/aligned/*_aligned.jpg``, 100x100 RGB like the released aligned faces) with random pixels:
it measures speed and memory, not accuracy. ``report`` prints, per epoch of a finished run, the
images per second of the whole epoch (training, the per-sample pass of robust epochs, validation)
and the peak GPU memory the trainer logged.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import yaml
from PIL import Image


def write_fixture(root: Path, images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    n_test = max(images // 8, 7)
    lines = [f"train_{i + 1:05d}.jpg {i % 7 + 1}" for i in range(images)]
    lines += [f"test_{i + 1:04d}.jpg {i % 7 + 1}" for i in range(n_test)]
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "Image" / "aligned").mkdir(parents=True, exist_ok=True)
    for line in lines:
        stem = line.split()[0][:-4]
        pixels = rng.integers(0, 256, size=(100, 100, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / "Image" / "aligned" / f"{stem}_aligned.jpg", quality=90)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")


def report(run: Path) -> None:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    labels = Path(cfg["data"]["root"]) / "EmoLabel" / "list_patition_label.txt"
    n_train = sum(1 for line in labels.read_text().splitlines() if line.startswith("train"))
    n_train = round(n_train * (1 - cfg["data"]["val_fraction"]))
    print(f"{run.name}: mixed_precision={cfg['mixed_precision']}, backbone={cfg['model']['backbone']}, "
          f"{cfg['data']['img_size']} px, batch {cfg['optim']['batch_size']} per process, "
          f"~{n_train} training images")
    for r in records:
        mem = r.get("peak_memory_mib")
        memory = f"peak memory {mem:.0f} MiB" if mem is not None else "no GPU memory logged"
        print(f"  epoch {r['epoch']} [{r['stage']}]: {r['epoch_seconds']:.1f} s, "
              f"{n_train / r['epoch_seconds']:.0f} training images/s (whole epoch), {memory}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixture")
    f.add_argument("--root", type=Path, required=True)
    f.add_argument("--images", type=int, default=2048)
    r = sub.add_parser("report")
    r.add_argument("run", type=Path)
    args = p.parse_args()
    if args.cmd == "fixture":
        write_fixture(args.root, args.images)
    else:
        report(args.run)


if __name__ == "__main__":
    main()
