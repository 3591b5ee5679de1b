"""Retrieval a user can look at: each query's nearest gallery images, as a CSV and as an HTML
page of thumbnails (correct neighbours framed green, wrong ones red).

    embedder = load_embedder("models:/demo-best@champion", tracking_uri)
    write_retrieval(embedder, Path("gallery/"), Path("queries/"), k=5, out=Path("retrieval/"))

``tune-lsd retrieve`` and ``tune-lsd embed`` are these functions; the search report's
"Retrieval examples" section uses :func:`neighbour_rows_html` on the validation classes.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tune_lsd import tracking
from tune_lsd.config import ConfigError
from tune_lsd.engine import CheckpointError, load_model_state
from tune_lsd.metrics import nearest_neighbours, retrieval_metrics
from tune_lsd.serving.embedder import ImageFolder, embed_images, embedder_from_snapshot, read_image_folder

THUMBNAIL_PX = 96
PAGE_QUERIES = 50  # queries shown on the page (all of them are in the CSV)
WORST_QUERIES = 6


@dataclass
class Embedder:
    """A loaded model: ``predictor.predict`` (MLflow pyfunc) or ``.embed`` (a model file), and
    the preprocessing settings it was logged with (channels, image_size, ...)."""

    predictor: Any
    settings: dict[str, Any]
    source: str

    def embed(self, images: ImageFolder, progress: bool = True) -> np.ndarray:
        """Embeddings of a folder's images, decoded and embedded batch by batch."""
        return embed_images(
            self.predictor, iter(images), len(images), batch_size=self.settings["batch_size"], progress=progress
        )


def is_model_uri(model: str) -> bool:
    """Whether ``model`` names an MLflow model by URI (resolved in a tracking store)."""
    return model.startswith(("models:/", "runs:/")) or "://" in model


def load_embedder(model: str, tracking_uri: str | None = None) -> Embedder:
    """``model``: an MLflow model URI (``models:/NAME@champion``, ``runs:/RUN_ID/model``), an
    MLflow model folder, or a tune_lsd model file (``best.pt`` of ``tune-lsd train``, a trial's
    ``model.pt``)."""
    path = Path(model)
    if is_model_uri(model) or (path / "MLmodel").is_file():
        pyfunc = tracking.load_embedding_model(model, tracking_uri)
        return Embedder(pyfunc, pyfunc.metadata.metadata[tracking.MODEL_METADATA_KEY], model)
    if not path.exists():
        raise CheckpointError(
            f"model not found: {model} (give a models:/ or runs:/ URI, an MLflow model folder or a tune_lsd model file)"
        )
    embedder = embedder_from_snapshot(load_model_state(path))
    assert embedder.preprocessing is not None  # embedder_from_snapshot sets it
    return Embedder(embedder, embedder.preprocessing, model)


def embed_folder(embedder: Embedder, folder: Path, output: Path) -> tuple[int, Path]:
    """Embed every image under ``folder`` into ``output`` (.npy, one row per image) and write the
    images' paths, in the same order, next to it (``<output>.paths.txt``)."""
    images = read_image_folder(folder, embedder.settings["channels"])
    vectors = embedder.embed(images)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.save(output, vectors)
    paths_file = output.with_suffix(".paths.txt")
    paths_file.write_text("".join(f"{p}\n" for p in images.paths))
    return len(vectors), paths_file


def write_retrieval(
    embedder: Embedder,
    gallery_dir: Path,
    query_dir: Path,
    k: int,
    out: Path,
    page_queries: int = PAGE_QUERIES,
    seed: int = 0,
) -> dict[str, Any]:
    """Each query's ``k`` nearest gallery images -> ``out/neighbours.csv`` and ``out/index.html``.

    When the query folder is the gallery folder, each image is a query against the others.
    With the ``DIR/<class>/*`` layout in both, neighbours are marked correct or wrong and
    Recall@1 and Recall@k (of :func:`tune_lsd.metrics.retrieval_metrics`) are reported.
    """
    if k < 1:
        raise ConfigError(f"-k must be 1 or more, got {k}")
    channels = embedder.settings["channels"]
    pooled = gallery_dir.resolve() == query_dir.resolve()
    gallery = read_image_folder(gallery_dir, channels)
    queries = gallery if pooled else read_image_folder(query_dir, channels)
    gallery_vectors = embedder.embed(gallery)
    query_vectors = gallery_vectors if pooled else embedder.embed(queries)
    ids, similarities = nearest_neighbours(query_vectors, None if pooled else gallery_vectors, k)
    query_labels, gallery_labels = _shared_labels(queries, gallery)
    correct = None
    if query_labels is not None and gallery_labels is not None:
        correct = gallery_labels[ids] == query_labels[:, None]
    result: dict[str, Any] = {
        "queries": len(queries.paths),
        "gallery": len(gallery.paths),
        "k": ids.shape[1],
        "pooled": pooled,
    }
    if query_labels is not None and gallery_labels is not None:
        ks = sorted({1, ids.shape[1]})
        metrics = retrieval_metrics(
            query_vectors,
            query_labels,
            ks,
            nmi=False,
            gallery=None if pooled else gallery_vectors,
            gallery_labels=None if pooled else gallery_labels,
        )
        result.update({f"recall@{kk}": metrics[f"recall@{kk}"] for kk in ks})

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(out / "neighbours.csv", queries.paths, gallery.paths, ids, similarities, correct)
    shown = _page_queries(len(queries.paths), page_queries, seed)
    sections = [(f"{len(shown)} of {len(queries.paths)} queries", shown)]
    if correct is not None:
        sections.append((f"the {WORST_QUERIES} worst queries", worst_queries(correct, similarities, WORST_QUERIES)))
    captions = [str(p.relative_to(query_dir)) for p in queries.paths]
    body = "".join(
        f"<h2>{html.escape(title)}</h2>"
        + neighbour_rows_html(queries, gallery, rows, ids, similarities, captions, query_labels, gallery_labels)
        for title, rows in sections
    )
    summary = ", ".join(
        f'Recall@{kk} <b data-metric="recall@{kk}">{result[f"recall@{kk}"]:.4f}</b>'
        for kk in (1, ids.shape[1])
        if f"recall@{kk}" in result
    )
    intro = (
        f"<p>Model <code>{html.escape(embedder.source)}</code>; {result['queries']} queries from "
        f"<code>{html.escape(str(query_dir))}</code>, gallery <code>{html.escape(str(gallery_dir))}</code> "
        f"({result['gallery']} images{', each query against the others' if pooled else ''}). {summary}</p>"
    )
    (out / "index.html").write_text(page("tune-lsd retrieval", intro + body))
    result.update(csv=str(out / "neighbours.csv"), page=str(out / "index.html"))
    return result


def _shared_labels(queries: ImageFolder, gallery: ImageFolder) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Class indices of queries and gallery in one numbering (class folder names), or Nones."""
    if queries.labels is None or gallery.labels is None:
        return None, None
    names = sorted(set(queries.classes) | set(gallery.classes))
    return (
        np.array([names.index(queries.classes[i]) for i in queries.labels]),
        np.array([names.index(gallery.classes[i]) for i in gallery.labels]),
    )


def _page_queries(count: int, shown: int, seed: int) -> list[int]:
    if count <= shown:
        return list(range(count))
    return sorted(np.random.default_rng(seed).choice(count, size=shown, replace=False).tolist())


def worst_queries(correct: np.ndarray, similarities: np.ndarray, count: int) -> list[int]:
    """The queries with the fewest correct neighbours; among equals, the most confidently
    wrong first (highest similarity of their nearest neighbour)."""
    order = np.lexsort((-similarities[:, 0], correct.sum(axis=1)))
    return order[:count].tolist()


def _write_csv(
    path: Path,
    query_paths: list[Path],
    gallery_paths: list[Path],
    ids: np.ndarray,
    similarities: np.ndarray,
    correct: np.ndarray | None,
) -> None:
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["query", "rank", "neighbour", "similarity", "distance", "correct"])
        for q, query in enumerate(query_paths):
            for rank, (g, similarity) in enumerate(zip(ids[q], similarities[q]), start=1):
                # Unit vectors: squared Euclidean distance = 2 - 2 cos.
                writer.writerow(
                    [
                        query,
                        rank,
                        gallery_paths[g],
                        f"{similarity:.6f}",
                        f"{max(0.0, 2 - 2 * float(similarity)) ** 0.5:.6f}",
                        "" if correct is None else int(correct[q, rank - 1]),
                    ]
                )


# --- HTML ------------------------------------------------------------------------------------


def thumbnail(image: np.ndarray, size: int = THUMBNAIL_PX) -> str:
    """An ``<img>`` of a uint8 image (H, W[, C]) as an inline PNG, at most ``size`` px; small
    images are drawn enlarged with sharp pixels."""
    picture = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    scale = size / max(picture.size)
    return (
        f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}" '
        f'width="{round(picture.width * scale)}" height="{round(picture.height * scale)}">'
    )


def neighbour_rows_html(
    query_images,
    gallery_images,
    rows: list[int],
    ids: np.ndarray,
    similarities: np.ndarray,
    captions: list[str],
    query_labels: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
) -> str:
    """One table row per query in ``rows``: the query, then its neighbours with similarity;
    with labels, each neighbour is framed green (the query's class) or red (another class).
    ``query_images[i]`` / ``gallery_images[j]`` give uint8 images (arrays, or an ImageFolder
    that decodes only the images shown)."""
    lines = ['<table class="retrieval">']
    for q in rows:
        query_label = "" if query_labels is None else f' data-label="{query_labels[q]}"'
        cells = [
            f'<td class="query"{query_label} title="{html.escape(captions[q])}">{thumbnail(query_images[q])}'
            f"<br>{html.escape(_clip(captions[q]))}</td>"
        ]
        for g, similarity in zip(ids[q], similarities[q]):
            if query_labels is None or gallery_labels is None:
                verdict, label = "unknown", ""
            else:
                verdict = "correct" if gallery_labels[g] == query_labels[q] else "wrong"
                label = f' data-label="{gallery_labels[g]}"'
            cells.append(
                f'<td class="neighbour {verdict}" data-verdict="{verdict}"{label}>'
                f"{thumbnail(gallery_images[g])}<br>{similarity:.3f}</td>"
            )
        lines.append(f'<tr data-query="{q}">{"".join(cells)}</tr>')
    lines.append("</table>")
    return "".join(lines)


RETRIEVAL_CSS = """
table.retrieval { border-collapse: separate; border-spacing: 6px; }
table.retrieval td { text-align: center; font-size: 11px; vertical-align: top; border: none; padding: 0; }
table.retrieval img { image-rendering: pixelated; display: block; margin: auto; }
td.query img { border: 4px solid #1f5fbf; }
td.correct img { border: 4px solid #1a9e3a; }
td.wrong img { border: 4px solid #d11f1f; }
td.unknown img { border: 4px solid #bbb; }
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page with the retrieval styles."""
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>body {{ font-family: sans-serif; margin: 2em; color: #222; }}{RETRIEVAL_CSS}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


def _clip(text: str, width: int = 18) -> str:
    return text if len(text) <= width else "…" + text[-width + 1 :]
