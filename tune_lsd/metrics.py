"""Retrieval metrics on exact neighbours: Recall@K, MAP@R, R-precision and NMI.

Every embedding is a query against all the others (the query itself excluded), or, with a
separate gallery, against the gallery (query -> gallery protocol); by inner product, i.e.
cosine similarity for the L2-normalised embeddings the models produce.
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

Neighbours are found where the embeddings are: faiss on the CPU, chunked torch matmul + top-k
on a GPU (two orders of magnitude faster there). Ties are broken by the lower index in both,
so both give the same metrics.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch
from sklearn.metrics import normalized_mutual_info_score

BYTES_PER_SCORE = 12  # torch path: a (chunk x N) float32 score block, plus top-k's workspace


def retrieval_metrics(
    embeddings: np.ndarray | torch.Tensor,
    labels: np.ndarray,
    ks: tuple[int, ...] | list[int] = (1, 2, 4, 8),
    nmi: bool = True,
    chunk_size: int | None = None,
    seed: int = 0,
    memory_budget_mb: int = 256,
    backend: str = "auto",
    gallery: np.ndarray | torch.Tensor | None = None,
    gallery_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """``{"recall@1": ..., "map@r": ..., "r_precision": ..., "nmi": ...}`` for (N, D) embeddings.

    Without ``gallery`` every embedding is a query against all the others (itself excluded).
    With ``gallery`` (and ``gallery_labels``) the embeddings are queries searched in the
    gallery, none excluded (the query -> gallery protocol of e.g. In-Shop); R counts the
    gallery items of the query's class, and NMI clusters queries and gallery together.

    ``backend``: "faiss" (exact ``IndexFlatIP`` on the CPU), "torch" (chunked matmul + top-k on
    the embeddings' device) or "auto": torch for a CUDA tensor, faiss otherwise. Both give the
    same neighbours: ties in similarity are broken by the lower index, in both.
    """
    if backend == "auto":
        backend = "torch" if isinstance(embeddings, torch.Tensor) and embeddings.is_cuda else "faiss"
    if backend not in ("faiss", "torch"):
        raise ValueError(f"unknown backend {backend!r}: use faiss, torch or auto")
    if (gallery is None) != (gallery_labels is None):
        raise ValueError("give both gallery and gallery_labels, or neither")
    pooled = gallery is None
    queries, labels = _vectors(embeddings, backend), np.asarray(labels).astype(np.int64)
    items, item_labels = (
        (queries, labels)
        if gallery is None
        else (_vectors(gallery, backend).to(queries.device), np.asarray(gallery_labels).astype(np.int64))
    )
    for vectors, names, what in ((queries, labels, "embeddings"), (items, item_labels, "gallery")):
        if vectors.ndim != 2 or len(vectors) != len(names):
            raise ValueError(f"need (N, D) {what} and N labels, got {tuple(vectors.shape)} and {names.shape}")
        if not bool(torch.isfinite(vectors).all()):
            raise ValueError(f"{what} contain NaN or inf")
    if queries.shape[1] != items.shape[1]:
        raise ValueError(f"queries have {queries.shape[1]} dimensions, the gallery {items.shape[1]}")

    classes, counts = np.unique(item_labels, return_counts=True)
    position = np.searchsorted(classes, labels).clip(max=len(classes) - 1)
    others = np.where(classes[position] == labels, counts[position], 0) - int(pooled)  # R for every query
    num_queries = int((others > 0).sum())
    if num_queries == 0:
        raise ValueError(
            ("no class has two or more items" if pooled else "no query's class is in the gallery")
            + ": retrieval metrics are undefined"
        )
    k = min(max(max(ks), int(others.max())), len(items) - int(pooled))

    if chunk_size is None:
        if backend == "torch":
            chunk_size = memory_budget_mb * 2**20 // (BYTES_PER_SCORE * len(items))
        else:  # ~40 bytes per (query, neighbour) pair: ids, distances and the masks below
            chunk_size = memory_budget_mb * 2**20 // (40 * (k + 1))
        chunk_size = max(1, min(len(labels), chunk_size))
    search = (_TorchSearch if backend == "torch" else _FaissSearch)(items, queries, exclude_self=pooled)
    hits_at = {kk: 0 for kk in ks}
    sum_ap = sum_r_precision = 0.0
    for start in range(0, len(labels), chunk_size):
        stop = min(start + chunk_size, len(labels))
        neighbours = _canonical_neighbours(search, start, stop, k)
        keep = others[start:stop] > 0
        relevant = item_labels[neighbours[keep]] == labels[start:stop][keep, None]  # (q, k) bool
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
        pooled_vectors = queries if pooled else torch.cat([queries, items])
        pooled_labels = labels if pooled else np.concatenate([labels, item_labels])
        metrics["nmi"] = clustering_nmi(pooled_vectors.cpu().numpy(), pooled_labels, seed)
    return metrics


def nearest_neighbours(
    queries: np.ndarray, gallery: np.ndarray | None = None, k: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """(ids, similarities) of each query's ``k`` nearest gallery items, in the canonical order
    the metrics use; without ``gallery``, of the other queries (each query itself excluded)."""
    query_vectors = _vectors(queries, "faiss")
    items = query_vectors if gallery is None else _vectors(gallery, "faiss")
    search = _FaissSearch(items, query_vectors, exclude_self=gallery is None)
    k = min(k, search.num_candidates)
    ids = _canonical_neighbours(search, 0, len(query_vectors), k)
    return ids, np.einsum("nd,nkd->nk", query_vectors.numpy(), items.numpy()[ids])


def _vectors(embeddings: np.ndarray | torch.Tensor, backend: str) -> torch.Tensor:
    """Contiguous float32 (N, D) tensor: on its device for torch, on the CPU for faiss."""
    if isinstance(embeddings, torch.Tensor):
        vectors = embeddings.detach().float().contiguous()
        return vectors.cpu() if backend == "faiss" else vectors
    return torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))


class _TorchSearch:
    """Exact inner-product search of queries among items by matmul + top-k on the vectors'
    device (fp32, no TF32); with ``exclude_self`` the queries are the items, each its own
    non-neighbour."""

    def __init__(self, items: torch.Tensor, queries: torch.Tensor, exclude_self: bool) -> None:
        self.items, self.queries, self.exclude_self = items, queries, exclude_self
        self.num_candidates = len(items) - int(exclude_self)  # neighbours a query can have

    def scores(self, query_ids: torch.Tensor) -> torch.Tensor:
        """(q, N) similarities of the queries (ids) to all items; with ``exclude_self`` each
        query's own score is -inf."""
        query_ids = query_ids.to(self.items.device)
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False  # exact fp32, as faiss
        try:
            scores = self.queries[query_ids] @ self.items.T
        finally:
            torch.backends.cuda.matmul.allow_tf32 = previous
        if self.exclude_self:
            scores[torch.arange(len(query_ids), device=scores.device), query_ids] = float("-inf")
        return scores

    def top(self, start: int, stop: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``n`` best (scores, ids) of queries start..stop-1 by decreasing score (the query
        itself excluded with ``exclude_self``); tied items in any order."""
        return self.scores(torch.arange(start, stop)).topk(n, dim=1)


class _FaissSearch(_TorchSearch):
    """Exact inner-product search by faiss ``IndexFlatIP`` on the CPU."""

    def __init__(self, items: torch.Tensor, queries: torch.Tensor, exclude_self: bool) -> None:
        super().__init__(items, queries, exclude_self)
        self.index = faiss.IndexFlatIP(items.shape[1])
        self.index.add(items.numpy())

    def top(self, start: int, stop: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        found = min(n + int(self.exclude_self), self.index.ntotal)  # one more: the query itself is usually among them
        scores, ids = (torch.from_numpy(a) for a in self.index.search(self.queries[start:stop].numpy(), found))
        if self.exclude_self:
            scores[ids == torch.arange(start, stop)[:, None]] = float("-inf")
        scores, order = scores.sort(dim=1, descending=True, stable=True)
        return scores[:, :n], ids.gather(1, order)[:, :n]


def _canonical_neighbours(search: _TorchSearch, start: int, stop: int, k: int) -> np.ndarray:
    """Each query's k nearest items, ordered by (similarity desc, index asc): the same
    neighbours whatever order the search returned tied items in.

    One extra neighbour shows where a tie crosses the k-th place; only those rows (rare but for
    duplicated embeddings) are scored again against all items and sorted stably.
    """
    n = min(k + 1, search.num_candidates)
    top_scores, top_ids = search.top(start, stop, n)
    scores, ids = top_scores[:, :k], top_ids[:, :k]
    by_id = ids.argsort(dim=1)
    scores, ids = scores.gather(1, by_id), ids.gather(1, by_id)
    ids = ids.gather(1, scores.argsort(dim=1, descending=True, stable=True))
    if n > k:
        crossing = (top_scores[:, k - 1] == top_scores[:, k]).nonzero()[:, 0]
        if len(crossing):
            full = search.scores(crossing.to(search.items.device) + start)
            ids[crossing.to(ids.device)] = full.argsort(dim=1, descending=True, stable=True)[:, :k].to(ids.device)
    return ids.cpu().numpy()


def clustering_nmi(embeddings: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    """NMI between ``labels`` and faiss k-means with one cluster per class."""
    num_classes = len(np.unique(labels))
    kmeans = faiss.Kmeans(embeddings.shape[1], num_classes, niter=20, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # small evaluation sets: no "too few points" warning
    kmeans.cp.max_points_per_centroid = 1_000_000
    kmeans.train(embeddings)
    _, clusters = kmeans.index.search(embeddings, 1)
    return float(normalized_mutual_info_score(labels, clusters[:, 0]))
