"""Throughput of the FERPlus train split through FERDataset + a torch DataLoader.

    python benchmarks/data_loading.py [--root ../shared/data/ferplus] [--out benchmarks/results/data_loading.json]

Measures (1) reader construction time (label parsing, majority vote, one existence check per image)
and (2) images per second over one full pass of the 25,045 train images with the evaluation-style
transform Resize(48) + ToTensor + Normalize, 2 workers, batch 256. ``--cache`` adds a pass after
``cache_in_memory()`` (decode once, then serve from a uint8 array).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

from fer_robust.data.ferplus import read_ferplus  # noqa: E402
from fer_robust.provenance import provenance, repo_relative  # noqa: E402
from fer_robust.utils import atomic_write_json  # noqa: E402


def time_one_pass(dataset, batch_size: int, num_workers: int) -> dict:
    """Seconds and images/s for one pass over ``dataset`` (worker start-up included)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, shuffle=False,
                        persistent_workers=False)
    start = time.perf_counter()
    seen = 0
    for images, labels, indices in loader:
        seen += images.shape[0]
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": round(seconds, 3), "images_per_s": round(seen / seconds, 1)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "ferplus"))
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "data_loading.json"))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cache", action="store_true", help="also time a pass from the in-memory cache")
    args = parser.parse_args(argv)
    origin = provenance(argv, __file__, cpu=True)

    start = time.perf_counter()
    dataset = read_ferplus(args.root, "train")
    construct_s = time.perf_counter() - start
    dataset.transform = transforms.Compose([
        transforms.Resize(48), transforms.ToTensor(),
        transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])

    result = {
        "provenance": origin, "root": repo_relative(args.root),
        "dataset": "ferplus train", "num_images": len(dataset),
        "construct_s": round(construct_s, 3), "batch_size": args.batch_size,
        "num_workers": args.workers, "transform": "Resize(48)+ToTensor+Normalize",
        "from_files": time_one_pass(dataset, args.batch_size, args.workers),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__},
    }
    if args.cache:
        start = time.perf_counter()
        dataset.cache_in_memory()
        result["cache_build_s"] = round(time.perf_counter() - start, 3)
        result["from_cache"] = time_one_pass(dataset, args.batch_size, args.workers)
    atomic_write_json(args.out, result)
    print(f"FERPlus train: {len(dataset):,} images, reader built in {construct_s:.2f} s")
    print(f"from files: {result['from_files']['images_per_s']:,.0f} images/s "
          f"({result['from_files']['seconds']:.1f} s per pass, {args.workers} workers, "
          f"batch {args.batch_size})")
    if args.cache:
        print(f"from cache: {result['from_cache']['images_per_s']:,.0f} images/s "
              f"(cache built in {result['cache_build_s']:.1f} s)")
    print(f"saved {args.out}")
    return result


if __name__ == "__main__":
    main()
