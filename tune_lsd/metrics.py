"""Retrieval metrics on exact faiss neighbours: Recall@K, MAP@R, R-precision and NMI.

Every embedding is a query against all the others (the query itself excluded), by inner
product, i.e. cosine similarity for the L2-normalised embeddings the models produce.
Definitions follow Musgrave et al., "A Metric Learning Reality Check" (2020):

- Recall@K: share of queries with at least one same-class item among their K neighbours.
- R-precision: with R = number of other items of the query's class, the share of same-class
  items among the R nearest neighbours.
- MAP@R: mean over queries of (1/R) * sum_{i<=R} P@i * [neighbour i is same-class].
- NMI: normalised mutual information between labels and a k-means clustering into as many
  clusters as classes.

Queries whose class has no other item (R = 0) have no correct answer and are left out of
all retrieval metrics. Queries are searched in chunks so that 100k x 512 embeddings fit in
memory: only ``chunk_size x k`` neighbours are held at a time, with ``k`` the largest class
size (MAP@R needs R neighbours) and ``chunk_size`` chosen to stay within ``memory_budget_mb``.
"""

from __future__ import annotations

import faiss
import numpy as np
from sklearn.metrics import normalized_mutual_info_score


def retrieval_metrics(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks: tuple[int, ...] | list[int] = (1, 2, 4, 8),
    nmi: bool = True,
    chunk_size: int | None = None,
    seed: int = 0,
    memory_budget_mb: int = 256,
) -> dict[str, float]:
    """``{"recall@1": ..., "map@r": ..., "r_precision": ..., "nmi": ...}`` for (N, D) embeddings."""
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    labels = np.asarray(labels).astype(np.int64)
    if embeddings.ndim != 2 or len(embeddings) != len(labels):
        raise ValueError(f"need (N, D) embeddings and N labels, got {embeddings.shape} and {labels.shape}")
    if not np.isfinite(embeddings).all():
        raise ValueError("embeddings contain NaN or inf")

    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    others = counts[inverse] - 1  # R for every query
    num_queries = int((others > 0).sum())
    if num_queries == 0:
        raise ValueError("no class has two or more items: retrieval metrics are undefined")
    k = min(max(max(ks), int(others.max())), len(labels) - 1)

    if chunk_size is None:  # ~40 bytes per (query, neighbour) pair: ids, distances and the masks below
        chunk_size = max(1, min(len(labels), memory_budget_mb * 2**20 // (40 * (k + 1))))
    index = faiss.IndexFlatIP(embeddings.shape[1])
    index.add(embeddings)
    hits_at = {kk: 0 for kk in ks}
    sum_ap = sum_r_precision = 0.0
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        _, neighbours = index.search(embeddings[start:stop], k + 1)
        neighbours = _drop_self(neighbours, np.arange(start, stop))
        keep = others[start:stop] > 0
        relevant = labels[neighbours[keep]] == labels[start:stop][keep, None]  # (q, k) bool
        for kk in ks:
            hits_at[kk] += int(relevant[:, :kk].any(axis=1).sum())
        r = others[start:stop][keep]
        within_r = np.arange(k)[None, :] < r[:, None]
        relevant_r = relevant & within_r
        precision_at_i = np.cumsum(relevant_r, axis=1) / np.arange(1, k + 1)
        sum_ap += float(((precision_at_i * relevant_r).sum(axis=1) / r).sum())
        sum_r_precision += float((relevant_r.sum(axis=1) / r).sum())

    metrics = {f"recall@{kk}": hits_at[kk] / num_queries for kk in ks}
    metrics["map@r"] = sum_ap / num_queries
    metrics["r_precision"] = sum_r_precision / num_queries
    if nmi:
        metrics["nmi"] = clustering_nmi(embeddings, labels, seed)
    return metrics


def clustering_nmi(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """NMI between ``labels`` and faiss k-means with one cluster per class."""
    num_classes = len(np.unique(labels))
    kmeans = faiss.Kmeans(embeddings.shape[1], num_classes, niter=20, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # small evaluation sets: no "too few points" warning
    kmeans.cp.max_points_per_centroid = 1_000_000
    kmeans.train(embeddings)
    _, clusters = kmeans.index.search(embeddings, 1)
    return float(normalized_mutual_info_score(labels, clusters[:, 0]))


def _drop_self(neighbours: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
    """Remove each query's own id from its (k+1) neighbours (the last one if it is not there,
    which happens when exact duplicates tie with the query)."""
    is_self = neighbours == query_ids[:, None]
    missing = ~is_self.any(axis=1)
    is_self[missing, -1] = True
    return neighbours[~is_self].reshape(len(neighbours), -1)
