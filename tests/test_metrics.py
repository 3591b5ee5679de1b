"""tune_lsd/metrics.py against a brute-force NumPy computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import normalized_mutual_info_score

from tune_lsd.metrics import clustering_nmi, nearest_neighbours, retrieval_metrics


def brute_force(
    embeddings: np.ndarray,
    labels: np.ndarray,
    ks,
    gallery: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
) -> dict[str, float]:
    """Full similarity matrix, full argsort, one query at a time (pooled, or query -> gallery)."""
    pooled = gallery is None
    items, item_labels = (embeddings, labels) if gallery is None else (gallery, gallery_labels)
    assert item_labels is not None
    similarity = embeddings.astype(np.float64) @ items.T.astype(np.float64)
    recalls: dict[int, list[float]] = {k: [] for k in ks}
    average_precisions: list[float] = []
    r_precisions: list[float] = []
    for q in range(len(labels)):
        r = int((item_labels == labels[q]).sum()) - int(pooled)
        if r == 0:
            continue  # a class with one sample has no correct answer
        order = [j for j in np.argsort(-similarity[q], kind="stable") if not (pooled and j == q)]
        relevant = item_labels[order] == labels[q]
        for k in ks:
            recalls[k].append(relevant[:k].any())
        hits, precision_sum = 0, 0.0
        for i in range(r):
            if relevant[i]:
                hits += 1
                precision_sum += hits / (i + 1)
        average_precisions.append(precision_sum / r)
        r_precisions.append(relevant[:r].sum() / r)
    result = {f"recall@{k}": float(np.mean(v)) for k, v in recalls.items()}
    result["map@r"] = float(np.mean(average_precisions))
    result["r_precision"] = float(np.mean(r_precisions))
    return result


def clustered_embeddings(n_classes: int, per_class: np.ndarray, dim: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    labels = np.repeat(np.arange(n_classes), per_class)
    x = centres[labels] + noise * rng.normal(size=(len(labels), dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_brute_force_with_singleton_classes(seed):
    rng = np.random.default_rng(seed)
    per_class = rng.integers(1, 9, size=40)  # includes classes with a single sample
    per_class[:3] = 1
    embeddings, labels = clustered_embeddings(40, per_class, 16, noise=1.2, seed=seed)
    ks = (1, 2, 4, 8, 16)
    ours = retrieval_metrics(embeddings, labels, ks, nmi=False)
    expected = brute_force(embeddings, labels, ks)
    for name, value in expected.items():
        assert ours[name] == pytest.approx(value, abs=1e-9), name
    assert 0.0 < ours["recall@1"] < 1.0  # a non-trivial case


def test_chunked_search_gives_the_same_numbers():
    embeddings, labels = clustered_embeddings(30, np.full(30, 7), 8, noise=1.0, seed=5)
    whole = retrieval_metrics(embeddings, labels, nmi=False, chunk_size=100_000)
    chunked = retrieval_metrics(embeddings, labels, nmi=False, chunk_size=13)
    assert whole == pytest.approx(chunked)


def tied_embeddings(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Small-integer vectors: every similarity is exact in float32 whatever the summation order,
    so many are exactly tied (duplicates across and within classes), plus singleton classes."""
    rng = np.random.default_rng(seed)
    embeddings = rng.integers(-1, 2, size=(150, 4)).astype(np.float32)
    embeddings[100:120] = embeddings[:20]  # exact duplicates, most in other classes
    labels = rng.integers(0, 25, size=150)
    labels[-4:] = [100, 101, 102, 103]  # singletons
    return embeddings, labels


@pytest.mark.parametrize("chunk_size", [None, 7])
@pytest.mark.parametrize("seed", [0, 1])
def test_torch_and_faiss_paths_give_identical_metrics_with_ties(seed, chunk_size):
    embeddings, labels = tied_embeddings(seed)
    ks = (1, 2, 4, 8)
    expected = brute_force(embeddings, labels, ks)
    by_faiss = retrieval_metrics(embeddings, labels, ks, nmi=False, chunk_size=chunk_size, backend="faiss")
    by_torch = retrieval_metrics(
        torch.from_numpy(embeddings), labels, ks, nmi=False, chunk_size=chunk_size, backend="torch"
    )
    assert by_faiss == by_torch  # exactly: the same neighbours in the same order
    for name, value in expected.items():
        assert by_torch[name] == pytest.approx(value, abs=1e-12), name
    assert 0.0 < by_torch["recall@1"] < 1.0


def test_auto_backend_uses_faiss_on_the_cpu_and_checks_its_name():
    embeddings, labels = clustered_embeddings(10, np.full(10, 4), 8, noise=1.0, seed=2)
    assert retrieval_metrics(torch.from_numpy(embeddings), labels, nmi=False) == retrieval_metrics(
        embeddings, labels, nmi=False, backend="faiss"
    )
    with pytest.raises(ValueError, match="unknown backend 'gpu'"):
        retrieval_metrics(embeddings, labels, backend="gpu")


def test_query_itself_is_excluded_even_with_exact_duplicates():
    # Two identical embeddings of different classes: each query's own copy ties with the other.
    embeddings = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [-1, 0], [-1, 0]], dtype=np.float32)
    labels = np.array([0, 1, 0, 1, 2, 2])
    ours = retrieval_metrics(embeddings, labels, ks=(1,), nmi=False)
    assert ours["recall@1"] == pytest.approx(brute_force(embeddings, labels, (1,))["recall@1"])
    assert ours["recall@1"] == pytest.approx(2 / 6)  # only class 2 finds its twin first


def test_perfect_and_keyed_results():
    embeddings, labels = clustered_embeddings(10, np.full(10, 5), 32, noise=0.01, seed=0)
    metrics = retrieval_metrics(embeddings, labels, ks=(1, 2))
    assert set(metrics) == {"recall@1", "recall@2", "map@r", "r_precision", "nmi"}
    assert metrics["recall@1"] == 1.0 and metrics["map@r"] == 1.0
    assert metrics["nmi"] > 0.85  # k-means may merge two clusters (one restart), but not more


def test_nmi_matches_sklearn_on_the_same_clustering():
    embeddings, labels = clustered_embeddings(8, np.full(8, 20), 16, noise=0.8, seed=3)
    value = clustering_nmi(embeddings, labels, seed=0)
    assert 0.3 < value < 1.0
    import faiss

    kmeans = faiss.Kmeans(16, 8, niter=20, seed=0)
    kmeans.cp.min_points_per_centroid = 1
    kmeans.cp.max_points_per_centroid = 1_000_000
    kmeans.train(embeddings)
    clusters = kmeans.index.search(embeddings, 1)[1][:, 0]
    assert value == pytest.approx(normalized_mutual_info_score(labels, clusters))


def test_bad_inputs_fail_clearly():
    with pytest.raises(ValueError, match="no class has two"):
        retrieval_metrics(np.eye(3, dtype=np.float32), np.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(np.full((4, 2), np.nan, dtype=np.float32), np.array([0, 0, 1, 1]))


def _unit(degrees: list[float]) -> np.ndarray:
    radians = np.deg2rad(degrees)
    return np.stack([np.cos(radians), np.sin(radians)], axis=1).astype(np.float32)


def test_query_to_gallery_differs_from_pooled_as_computed_by_hand():
    # Gallery: A at 0 deg, B at 90 deg. Queries: A at 10 deg, B at 30 deg.
    gallery, gallery_labels = _unit([0, 90]), np.array([0, 1])
    queries, query_labels = _unit([10, 30]), np.array([0, 1])
    # Query -> gallery: the A query finds A (10 deg away), the B query finds A (30 deg) before B (60 deg).
    separate = retrieval_metrics(
        queries, query_labels, ks=(1, 2), nmi=False, gallery=gallery, gallery_labels=gallery_labels
    )
    assert separate == {"recall@1": 0.5, "recall@2": 1.0, "map@r": 0.5, "r_precision": 0.5}
    # Pooled (4 items, each against the 3 others): A@10 -> A@0 right, B@30 -> A@10 wrong,
    # A@0 -> A@10 right, B@90 -> B@30 (60 deg, before A@10 at 80 deg) right.
    pooled = retrieval_metrics(
        np.concatenate([queries, gallery]), np.concatenate([query_labels, gallery_labels]), ks=(1,), nmi=False
    )
    assert pooled == {"recall@1": 0.75, "map@r": 0.75, "r_precision": 0.75}


@pytest.mark.parametrize("seed", [0, 1])
def test_query_to_gallery_matches_brute_force_on_both_backends(seed):
    embeddings, labels = tied_embeddings(seed)
    rng = np.random.default_rng(seed)
    is_query = rng.random(len(labels)) < 0.4
    queries, query_labels = embeddings[is_query], labels[is_query]
    gallery, gallery_labels = embeddings[~is_query], labels[~is_query]
    query_labels[0] = labels.max() + 1  # a query whose class is not in the gallery: left out
    ks = (1, 2, 4)
    expected = brute_force(queries, query_labels, ks, gallery, gallery_labels)
    by_faiss = retrieval_metrics(
        queries,
        query_labels,
        ks,
        nmi=False,
        gallery=gallery,
        gallery_labels=gallery_labels,
        chunk_size=5,
        backend="faiss",
    )
    by_torch = retrieval_metrics(
        torch.from_numpy(queries),
        query_labels,
        ks,
        nmi=False,
        backend="torch",
        gallery=torch.from_numpy(gallery),
        gallery_labels=gallery_labels,
    )
    assert by_faiss == by_torch
    for name, value in expected.items():
        assert by_faiss[name] == pytest.approx(value, abs=1e-12), name
    with pytest.raises(ValueError, match="both gallery and gallery_labels"):
        retrieval_metrics(queries, query_labels, gallery=gallery)


def test_nearest_neighbours_are_the_metrics_neighbours():
    embeddings, labels = tied_embeddings(0)
    ids, similarities = nearest_neighbours(embeddings, k=3)
    similarity = embeddings.astype(np.float64) @ embeddings.T
    for q in range(len(labels)):
        order = [j for j in np.argsort(-similarity[q], kind="stable") if j != q][:3]
        assert ids[q].tolist() == order
    assert np.allclose(similarities, np.take_along_axis(similarity, ids, axis=1), atol=1e-6)
    has_answer = np.bincount(labels)[labels] > 1  # singleton classes are left out of the metrics
    recall_at_1 = float(np.mean((labels[ids[:, 0]] == labels)[has_answer]))
    assert recall_at_1 == pytest.approx(retrieval_metrics(embeddings, labels, ks=(1,), nmi=False)["recall@1"])
