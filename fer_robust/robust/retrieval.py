"""Retrieval relabelling (DR-FER): give each noisy sample a soft label from its clean neighbours.

Steps (shapes for Q queries = noisy samples, G gallery = clean samples, K neighbours, C classes):

1. :func:`knn_search` — cosine top-K of each query among the gallery: ``scores, ids`` (Q, K).
2. ``gallery_labels[ids]`` — the neighbours' (given) labels: (Q, K).
3. :func:`per_class_average_precision` — for each class c, the average precision of the ranked list
   with class-c neighbours as the relevant items: (Q, C), normalised by the list length so that
   more and higher-ranked neighbours of a class always weigh more (see the function).
4. :func:`retrieval_soft_labels` — normalise the APs to sum 1 (e.g. ``[0.6, 0.4, 0.0]``), optionally
   sharpen, and take the argmax as the new hard label.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fer_robust.config import RelabelConfig

__all__ = ["faiss_gpu_available", "knn_search", "per_class_average_precision",
           "sharpen", "RelabelResult", "retrieval_soft_labels"]

# Faiss GPU indices cap k (and nprobe) at 2048; larger searches run on the CPU index.
_FAISS_GPU_MAX_K = 2048
# faiss warns below 39 training points per IVF list: nlist is capped so the gallery can train it.
_MIN_POINTS_PER_LIST = 39
# IVF k-means trains on this many gallery points per list for this many iterations: training is
# the largest fixed cost of an IVF search, and more points or iterations did not raise recall on
# clustered embeddings (benchmarks/relabel_scale.py).
_TRAIN_POINTS_PER_LIST = 64
_KMEANS_ITERATIONS = 10


def faiss_gpu_available() -> bool:
    """True when the installed faiss is the GPU build and sees at least one GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _l2_normalized(x: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-contiguous float32 copy with unit-norm rows (zero rows stay zero)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D (n, dim) array, got shape {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, np.maximum(norms, 1e-12), out=x)
    return x


def _build_faiss_index(gallery: np.ndarray, index: str, nlist: int, nprobe: int, seed: int,
                       use_gpu: bool):
    """An inner-product faiss index holding ``gallery`` (already normalised)."""
    import faiss
    num_gallery, dim = gallery.shape
    if index == "flat":
        cpu_index = faiss.IndexFlatIP(dim)
    elif index == "ivf":
        nlist = max(1, min(nlist, num_gallery // _MIN_POINTS_PER_LIST))
        quantizer = faiss.IndexFlatIP(dim)
        cpu_index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        n_train = min(num_gallery, nlist * _TRAIN_POINTS_PER_LIST)
        rng = np.random.default_rng(seed)
        train = gallery[np.sort(rng.choice(num_gallery, n_train, replace=False))]
        cpu_index.cp.seed = seed  # k-means initialisation, so the IVF result is reproducible
        cpu_index.cp.niter = _KMEANS_ITERATIONS
        cpu_index.train(train)
        cpu_index.nprobe = max(1, min(nprobe, nlist))
    else:
        raise ValueError(f"index must be 'flat' or 'ivf', got {index!r}")
    if use_gpu:
        resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, cpu_index)
        gpu_index.add(gallery)
        gpu_index._resources = resources  # keep the resources alive as long as the index
        return gpu_index
    cpu_index.add(gallery)
    return cpu_index


def _torch_search(queries: np.ndarray, gallery: np.ndarray, k: int, query_chunk: int,
                  device: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by chunked ``q @ g.T`` + ``topk`` (bounded memory: one (chunk, G) score block)."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    g = torch.from_numpy(gallery).to(dev)
    # Keep one score block under ~256 MB whatever the gallery size.
    rows = max(1, min(query_chunk, (256 << 20) // (4 * max(1, g.shape[0]))))
    scores = np.empty((queries.shape[0], k), np.float32)
    ids = np.empty((queries.shape[0], k), np.int64)
    for start in range(0, queries.shape[0], rows):
        q = torch.from_numpy(queries[start:start + rows]).to(dev)
        top = torch.topk(q @ g.T, k, dim=1, largest=True, sorted=True)  # (rows, k)
        scores[start:start + rows] = top.values.cpu().numpy()
        ids[start:start + rows] = top.indices.cpu().numpy()
    return scores, ids


def knn_search(queries: np.ndarray | torch.Tensor, gallery: np.ndarray | torch.Tensor, k: int,
               backend: str = "faiss", index: str = "flat", nlist: int = 1024, nprobe: int = 32,
               exclude_self: bool = False, query_chunk: int = 16384, seed: int = 0,
               use_gpu: bool | None = None, device: str | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k neighbours of each query in the gallery.

    Rows are L2-normalised (copies; inputs are untouched), so the inner product is the cosine.

    Args:
        queries: (Q, D) float embeddings.
        gallery: (G, D) float embeddings.
        k: neighbours per query, clipped to what the gallery can give (``G``, or ``G - 1`` with
            ``exclude_self``). Only IVF can still return fewer than k: those ids are -1 (score -inf).
        backend: ``'faiss'`` (GPU build used when present) or ``'torch'`` (exact chunked matmul +
            topk; CUDA when available, else CPU), kept as a cross-check and a fallback.
        index: ``'flat'`` (exact) or ``'ivf'`` (IndexIVFFlat, approximate; faiss only). ``nlist`` is
            capped at ``G // 39`` and centroids are trained on a seeded gallery subsample.
        nlist, nprobe: IVF lists and lists probed per query.
        exclude_self: queries are the gallery's first Q rows (``queries[i] is gallery[i]``): drop
            gallery item ``i`` from query ``i``'s list (or the last of k+1 when ties hide it).
        query_chunk: queries per search call, bounding the (chunk, k) result and scratch memory.
        seed: IVF training subsample and k-means seed.
        use_gpu: faiss on GPU; ``None`` = when the GPU build is installed and sees a GPU.
        device: torch backend device; ``None`` = CUDA when available.

    Returns:
        scores: (Q, k') float32 cosine similarities, descending per row.
        ids: (Q, k') int64 gallery indices, with ``k' = min(k, G - exclude_self)``.
    """
    q = _l2_normalized(queries)
    g = _l2_normalized(gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"queries dim {q.shape[1]} != gallery dim {g.shape[1]}")
    if exclude_self and q.shape[0] > g.shape[0]:
        raise ValueError("exclude_self needs the queries to be the gallery's first rows")
    k_out = min(int(k), g.shape[0] - int(exclude_self))
    if k_out < 1 or q.shape[0] == 0:
        return np.zeros((q.shape[0], max(k_out, 0)), np.float32), np.zeros((q.shape[0], max(k_out, 0)), np.int64)
    k_search = k_out + int(exclude_self)

    if backend == "torch":
        if index != "flat":
            raise ValueError("the torch backend is exact: use index='flat'")
        scores, ids = _torch_search(q, g, k_search, query_chunk, device)
    elif backend == "faiss":
        if use_gpu is None:
            use_gpu = faiss_gpu_available()
        use_gpu = bool(use_gpu) and k_search <= _FAISS_GPU_MAX_K
        faiss_index = _build_faiss_index(g, index, nlist, nprobe, seed, use_gpu)
        scores = np.empty((q.shape[0], k_search), np.float32)
        ids = np.empty((q.shape[0], k_search), np.int64)
        for start in range(0, q.shape[0], query_chunk):
            block_scores, block_ids = faiss_index.search(q[start:start + query_chunk], k_search)
            scores[start:start + query_chunk] = block_scores
            ids[start:start + query_chunk] = block_ids
        # IVF may find fewer than k items when the probed lists are small: faiss pads with id -1
        # and a huge negative score; make the score -inf so it reads as "no neighbour".
        scores[ids < 0] = -np.inf
    else:
        raise ValueError(f"backend must be 'faiss' or 'torch', got {backend!r}")

    if exclude_self:
        own = ids == np.arange(q.shape[0])[:, None]
        # With exact duplicates the query itself may be pushed past rank k+1: drop the last instead.
        no_own = ~own.any(1)
        own[no_own, -1] = True
        own &= np.cumsum(own, axis=1) == 1  # one dropped item per row
        keep = ~own
        scores = scores[keep].reshape(q.shape[0], k_out)
        ids = ids[keep].reshape(q.shape[0], k_out)
    return scores, ids


def per_class_average_precision(neighbor_labels: np.ndarray, num_classes: int,
                                chunk_size: int = 4096, normalization: str = "list") -> np.ndarray:
    """Average precision of each class in each query's ranked neighbour list, vectorised.

    For query q with ranked neighbour labels ``y_1..y_K`` and class c::

        AP_c = (1 / N_c) * sum_{k : y_k = c} precision_c@k,   precision_c@k = #{j <= k : y_j = c} / k

    DR-FER only says "per-class AP of the ranking"; the normaliser ``N_c`` is a choice
    (``robust.relabel.ap_normalization``):

    - ``"list"`` (default): ``N_c = K``, the list length. ``AP_c`` is then the AP the class would
      have relative to a list made of it alone, so every extra class-c neighbour and every rank a
      class-c neighbour moves up raises ``AP_c``: one neighbour at rank 1 of K=50 scores 0.02, 49
      neighbours at ranks 2-50 score 0.91, and the soft label follows the evidence.
    - ``"hits"``: ``N_c = R_c = #{k : y_k = c}``, the textbook AP of a retrieval with R_c relevant
      items. It measures only how early class c's hits come, not how many there are: the single
      rank-1 neighbour above scores 1.0 and outweighs the 49 others (0.92).

    ``AP_c = 0`` when class c is absent from the list. Computed from a one-hot tensor, its
    cumulative sum along K, and a product with ``1/k``; no loop over queries. The one-hot is laid
    out (Q, C, K) so the cumulative sum runs along contiguous memory (several times faster than
    along the middle axis of (Q, K, C)). Queries go ``chunk_size`` at a time, bounding memory at
    ``chunk_size * C * K`` floats.

    Args:
        neighbor_labels: (Q, K) int labels of the ranked neighbours (best first). Labels outside
            ``[0, num_classes)`` (e.g. -1 for a missing neighbour) count for no class.
        num_classes: C.

    Returns:
        (Q, C) float32 APs in [0, 1].
    """
    neighbor_labels = np.asarray(neighbor_labels)
    num_queries, num_neighbors = neighbor_labels.shape
    out = np.zeros((num_queries, num_classes), np.float32)
    if normalization not in ("list", "hits"):
        raise ValueError(f"normalization must be 'list' or 'hits', got {normalization!r}")
    if num_neighbors == 0:
        return out
    inv_rank = 1.0 / np.arange(1, num_neighbors + 1, dtype=np.float32)            # 1/k, (K,)
    classes = np.arange(num_classes)[None, :, None]
    for start in range(0, num_queries, chunk_size):
        labels = neighbor_labels[start:start + chunk_size]
        one_hot = labels[:, None, :] == classes                                    # (q, C, K) bool
        hits_so_far = np.cumsum(one_hot, axis=2, dtype=np.float32)                 # (q, C, K)
        hits_so_far *= one_hot                                                     # only at class-c ranks
        precision_sum = hits_so_far @ inv_rank                                     # (q, C)
        if normalization == "hits":
            norm = np.maximum(np.count_nonzero(one_hot, axis=2), 1)                # R_c, (q, C)
        else:
            norm = num_neighbors
        out[start:start + chunk_size] = precision_sum / norm
    return out


def sharpen(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``p ** (1 / T)`` renormalised per row (T < 1 sharpens, T = 1 is the identity)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if temperature == 1.0:
        return probs
    with np.errstate(divide="ignore", under="ignore"):
        # In log space so tiny temperatures neither underflow every entry nor overflow.
        logp = np.where(probs > 0, np.log(np.maximum(probs, 1e-38)), -np.inf) / temperature
    logp -= logp.max(1, keepdims=True)
    powered = np.exp(logp)
    return (powered / powered.sum(1, keepdims=True)).astype(np.float32)


@dataclass
class RelabelResult:
    """Output of :func:`retrieval_soft_labels` (Q queries, C classes, K neighbours).

    Attributes:
        soft_labels: (Q, C) float32, rows sum to 1 (uniform where no class was retrieved).
        new_labels: (Q,) int64 argmax of ``soft_labels``.
        confidence: (Q,) float32 max of ``soft_labels``.
        neighbor_ids: (Q, K) int64 gallery indices, best first.
        neighbor_scores: (Q, K) float32 cosine similarities.
    """
    soft_labels: np.ndarray
    new_labels: np.ndarray
    confidence: np.ndarray
    neighbor_ids: np.ndarray
    neighbor_scores: np.ndarray


def retrieval_soft_labels(query_emb: np.ndarray | torch.Tensor, gallery_emb: np.ndarray | torch.Tensor,
                          gallery_labels: np.ndarray, num_classes: int, cfg: RelabelConfig,
                          exclude_self: bool = False) -> RelabelResult:
    """Soft labels for queries (noisy samples) from the labels of their gallery (clean) neighbours.

    ``soft_label_c = AP_c / sum_c' AP_c'`` (:func:`per_class_average_precision` over the top
    ``cfg.k`` cosine neighbours), then ``sharpen(., cfg.sharpen)``. A query whose neighbours carry no
    valid label gets the uniform distribution (confidence ``1 / C``).

    Args:
        query_emb: (Q, D) embeddings of the samples to relabel.
        gallery_emb: (G, D) embeddings of the clean samples.
        gallery_labels: (G,) int labels of the gallery.
        num_classes: C.
        cfg: :class:`~fer_robust.config.RelabelConfig` (k, backend, index, nlist, nprobe, sharpen).
        exclude_self: passed to :func:`knn_search` when the queries are the gallery's first rows.
    """
    scores, ids = knn_search(query_emb, gallery_emb, cfg.k, backend=cfg.backend, index=cfg.index,
                             nlist=cfg.nlist, nprobe=cfg.nprobe, exclude_self=exclude_self)
    gallery_labels = np.asarray(gallery_labels).reshape(-1)
    neighbor_labels = np.where(ids >= 0, gallery_labels[np.maximum(ids, 0)], -1)  # (Q, K)
    ap = per_class_average_precision(neighbor_labels, num_classes,
                                     normalization=cfg.ap_normalization)          # (Q, C)
    total = ap.sum(1, keepdims=True)
    soft = np.where(total > 0, ap / np.maximum(total, 1e-12), 1.0 / num_classes).astype(np.float32)
    soft = sharpen(soft, cfg.sharpen)
    return RelabelResult(soft_labels=soft, new_labels=soft.argmax(1).astype(np.int64),
                         confidence=soft.max(1).astype(np.float32), neighbor_ids=ids,
                         neighbor_scores=scores)
