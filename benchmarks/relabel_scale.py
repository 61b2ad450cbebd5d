"""How retrieval relabelling scales: exact and IVF search, and the per-class AP step.

Measures, on this machine and ``--threads`` threads:

(a) the sgemm rate (float32 ``torch.matmul`` of ``--gemm-size`` squares), GFLOP/s, before and after
    the searches (a drop means another job competed for the cores);
(b) exact cosine search of Q queries among G gallery items (``knn_search(index='flat')``): time and
    its ratio to the matmul bound ``2 Q G D / sgemm_rate`` (target <= 1.5);
(c) IVF search (``index='ivf'``, training included): speed-up over exact (target >= 4) and
    recall@K against the exact ids (target >= 0.95);
(d) ``per_class_average_precision`` on the exact neighbours' labels: time (target <= 10% of search).

Data: unit-norm embeddings drawn around ``--classes`` class centres, each with ``--subclusters``
sub-centres (faces of one expression cluster by identity, pose, ...). Queries and gallery are drawn
from the same centres.

    python benchmarks/relabel_scale.py --quick            # 10k x 25k, about a minute
    python benchmarks/relabel_scale.py                    # 100k x 250k x 512, K=200
"""
from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fer_robust.provenance import provenance, repo_relative  # noqa: E402
from fer_robust.robust.retrieval import (faiss_gpu_available, knn_search,  # noqa: E402
                                         per_class_average_precision)
from fer_robust.utils import atomic_write_json  # noqa: E402


def sgemm_gflops(size: int, repeats: int) -> float:
    """Best-of-``repeats`` float32 matmul rate of two (size, size) matrices, GFLOP/s."""
    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.matmul(a, b)  # warm-up: thread pool and allocator
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size ** 3 / best / 1e9


def clustered_embeddings(num: int, dim: int, centres: np.ndarray, spread: float,
                         rng: np.random.Generator, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """``num`` unit-norm float32 points around random rows of ``centres`` (S, dim), with isotropic
    noise of std ``spread``. Returns the points (num, dim) and the centre row of each (num,)."""
    which = rng.integers(0, centres.shape[0], num)
    out = np.empty((num, dim), np.float32)
    for start in range(0, num, chunk):
        block = rng.standard_normal((min(chunk, num - start), dim), dtype=np.float32)
        block *= spread
        block += centres[which[start:start + chunk]]
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + chunk] = block
    return out, which


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean share of each row's exact top-K ids found in the approximate top-K."""
    k = exact_ids.shape[1]
    # Sort once and test membership row-wise with searchsorted, vectorised over rows.
    exact_sorted = np.sort(exact_ids, axis=1)
    offsets = (np.arange(exact_ids.shape[0]) * (exact_ids.max() + 2))[:, None]
    flat = (exact_sorted + offsets).ravel()
    probe = (approx_ids + offsets).ravel()
    pos = np.clip(np.searchsorted(flat, probe), 0, flat.size - 1)
    found = (flat[pos] == probe).reshape(approx_ids.shape) & (approx_ids >= 0)
    return float(found.sum() / (exact_ids.shape[0] * k))


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--gallery", type=int, default=250_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=200)
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--subclusters", type=int, default=0,
                        help="sub-centres per class; 0 = gallery / (classes * 2.5 K), so a query's "
                             "K neighbours lie in its sub-cluster at every size (62 at full size)")
    parser.add_argument("--spread", type=float, default=1.0,
                        help="noise std relative to the centres' per-dimension std")
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gemm-size", type=int, default=4096)
    parser.add_argument("--torch-exact", action="store_true",
                        help="also time the torch matmul + topk backend for exact search")
    parser.add_argument("--quick", action="store_true", help="10k queries x 25k gallery")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/relabel_scale.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.queries, args.gallery = 10_000, 25_000
    if args.subclusters <= 0:
        args.subclusters = max(1, round(args.gallery / (args.classes * 2.5 * args.k)))

    import faiss
    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)

    # knn_search runs faiss on the GPU when its GPU build sees one.
    results: dict = {"provenance": provenance(argv, __file__, cpu=not faiss_gpu_available()),
                     "args": {**vars(args), "out": repo_relative(args.out)},
                     "machine": platform.processor() or platform.machine(),
                     "faiss": faiss.__version__, "torch": torch.__version__}
    print(f"Q={args.queries} G={args.gallery} D={args.dim} K={args.k} threads={args.threads}", flush=True)

    results["sgemm_gflops_before"] = sgemm_gflops(args.gemm_size, repeats=3)
    print(f"sgemm: {results['sgemm_gflops_before']:.1f} GFLOP/s", flush=True)

    rng = np.random.default_rng(args.seed)
    class_centres = rng.standard_normal((args.classes, 1, args.dim), dtype=np.float32)
    sub_offsets = 0.8 * rng.standard_normal((args.classes, args.subclusters, args.dim), dtype=np.float32)
    centres = (class_centres + sub_offsets).reshape(-1, args.dim)
    (gallery, gallery_sub), t_data = timed(clustered_embeddings, args.gallery, args.dim, centres,
                                           args.spread, rng)
    queries, _ = clustered_embeddings(args.queries, args.dim, centres, args.spread, rng)
    gallery_labels = gallery_sub // args.subclusters
    results["data_seconds"] = t_data
    print(f"data: {t_data:.1f}s for the gallery", flush=True)

    flops = 2.0 * args.queries * args.gallery * args.dim
    bound = flops / (results["sgemm_gflops_before"] * 1e9)
    results["matmul_bound_seconds"] = bound

    (exact_scores, exact_ids), t_exact = timed(knn_search, queries, gallery, args.k, backend="faiss")
    results["exact_faiss_seconds"] = t_exact
    results["exact_faiss_ratio_to_bound"] = t_exact / bound
    print(f"exact faiss: {t_exact:.1f}s  (bound {bound:.1f}s, ratio {t_exact / bound:.2f})", flush=True)

    if args.torch_exact:
        (_, torch_ids), t_torch = timed(knn_search, queries, gallery, args.k, backend="torch")
        results["exact_torch_seconds"] = t_torch
        results["exact_torch_ratio_to_bound"] = t_torch / bound
        results["torch_vs_faiss_id_agreement"] = float(np.mean(torch_ids == exact_ids))
        print(f"exact torch: {t_torch:.1f}s  (ratio {t_torch / bound:.2f})", flush=True)

    (_, ivf_ids), t_ivf = timed(knn_search, queries, gallery, args.k, backend="faiss", index="ivf",
                                nlist=args.nlist, nprobe=args.nprobe, seed=args.seed)
    results["ivf_seconds"] = t_ivf
    results["ivf_speedup"] = t_exact / t_ivf
    results["ivf_recall_at_k"] = recall_at_k(ivf_ids, exact_ids)
    print(f"ivf nlist={args.nlist} nprobe={args.nprobe}: {t_ivf:.1f}s  "
          f"(speed-up {t_exact / t_ivf:.1f}x, recall@{args.k} {results['ivf_recall_at_k']:.4f})", flush=True)

    neighbor_labels = gallery_labels[exact_ids]
    exact_ap, t_ap = timed(per_class_average_precision, neighbor_labels, args.classes)
    results["ap_seconds"] = t_ap
    # What relabelling needs from IVF: the same argmax class as exact search would give.
    ivf_labels = np.where(ivf_ids >= 0, gallery_labels[np.maximum(ivf_ids, 0)], -1)
    ivf_ap = per_class_average_precision(ivf_labels, args.classes)
    results["ivf_new_label_agreement"] = float(np.mean(ivf_ap.argmax(1) == exact_ap.argmax(1)))
    results["ap_share_of_exact_search"] = t_ap / t_exact
    print(f"per-class AP: {t_ap:.2f}s ({100 * t_ap / t_exact:.1f}% of exact search)", flush=True)

    results["sgemm_gflops_after"] = sgemm_gflops(args.gemm_size, repeats=3)

    rows = [
        ("sgemm GFLOP/s (before / after)",
         f"{results['sgemm_gflops_before']:.1f} / {results['sgemm_gflops_after']:.1f}", ""),
        ("exact faiss, s", f"{t_exact:.1f}", f"ratio to bound {t_exact / bound:.2f} (target <= 1.5)"),
    ]
    if args.torch_exact:
        rows.append(("exact torch, s", f"{results['exact_torch_seconds']:.1f}",
                     f"ratio to bound {results['exact_torch_ratio_to_bound']:.2f}"))
    rows += [
        ("ivf, s", f"{t_ivf:.1f}", f"speed-up {t_exact / t_ivf:.1f}x (target >= 4)"),
        (f"ivf recall@{args.k}", f"{results['ivf_recall_at_k']:.4f}", "target >= 0.95"),
        ("ivf vs exact new-label agreement", f"{results['ivf_new_label_agreement']:.4f}", ""),
        ("per-class AP, s", f"{t_ap:.2f}", f"{100 * t_ap / t_exact:.1f}% of search (target <= 10%)"),
    ]
    print()
    for name, value, note in rows:
        print(f"{name:<34}{value:>16}   {note}")
    atomic_write_json(args.out, results)
    print(f"\nsaved {args.out}")
    return results


if __name__ == "__main__":
    main()
