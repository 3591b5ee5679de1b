"""tune_lsd/serving/retrieval.py through `tune-lsd embed` / `tune-lsd retrieve` on glyph folders
written here: the engine's embeddings, Recall@1 equal to the metrics', one-line errors."""

from __future__ import annotations

import csv
import re
import warnings

import mlflow
import numpy as np
import pytest
from PIL import Image

from tune_lsd.cli import main
from tune_lsd.data.datasets import LabelledImages
from tune_lsd.metrics import retrieval_metrics

QUERIES_PER_CLASS = 2

OTHER_MODEL_CODE = """
import mlflow.pyfunc
import numpy as np


class Echo(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return model_input


mlflow.models.set_model(Echo())
"""


def tune_lsd(capsys, *args) -> tuple[int, str, str]:
    """`tune-lsd ARGS` in this process (warning filters restored after), its status and output."""
    with warnings.catch_warnings():
        status = main([str(a) for a in args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


@pytest.fixture(scope="module")
def folders(trained_model, tmp_path_factory):
    """The test classes as PNGs: all/<class>/*, and split into query/ (2 per class) and gallery/."""
    trainer, _ = trained_model
    test = trainer.splits.test
    root = tmp_path_factory.mktemp("glyphs")
    for label in np.unique(test.labels)[:12]:
        for rank, index in enumerate(np.flatnonzero(test.labels == label)):
            for part in ("all", "query" if rank < QUERIES_PER_CLASS else "gallery"):
                folder = root / part / f"class{label:03d}"
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(test.images[index][..., 0]).save(folder / f"{index:05d}.png")
    return root


def engine_embeddings(trainer, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The engine's embeddings of image files and their labels (from the class folder names)."""
    images = np.stack([np.asarray(Image.open(p))[..., None] for p in paths])
    labels = np.array([int(re.findall(r"class(\d+)", p)[0]) for p in paths])
    return trainer.embed(LabelledImages(images, labels)).numpy(), labels


def test_embed_writes_the_engines_embeddings_in_path_order(trained_model, folders, tmp_path, capsys):
    trainer, model_file = trained_model
    status, out, _ = tune_lsd(
        capsys, "embed", "--model", model_file, "--images", folders / "all", "-o", tmp_path / "vectors.npy"
    )
    assert status == 0 and "wrote" in out
    paths = (tmp_path / "vectors.paths.txt").read_text().split()
    expected, _ = engine_embeddings(trainer, paths)
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), expected, atol=1e-5)
    assert paths == sorted(paths) and len(paths) == len(list((folders / "all").rglob("*.png")))


@pytest.mark.parametrize("protocol", ["each against the others", "query -> gallery"])
def test_retrieve_page_and_csv_agree_with_the_metrics(trained_model, folders, tmp_path, capsys, protocol):
    trainer, model_file = trained_model
    pooled = protocol == "each against the others"
    query_dir, gallery_dir = (folders / "all",) * 2 if pooled else (folders / "query", folders / "gallery")
    status, out, _ = tune_lsd(
        capsys,
        "retrieve",
        "--model",
        model_file,
        "--gallery",
        gallery_dir,
        "--query",
        query_dir,
        "-k",
        3,
        "-o",
        tmp_path / "out",
    )
    assert status == 0, out
    with open(tmp_path / "out" / "neighbours.csv") as file:
        rows = list(csv.DictReader(file))
    queries = sorted({row["query"] for row in rows})
    query_vectors, query_labels = engine_embeddings(trainer, queries)
    if pooled:
        expected = retrieval_metrics(query_vectors, query_labels, ks=(1, 3), nmi=False)
    else:
        gallery_vectors, gallery_labels = engine_embeddings(trainer, sorted(str(p) for p in gallery_dir.rglob("*.png")))
        expected = retrieval_metrics(
            query_vectors, query_labels, ks=(1, 3), nmi=False, gallery=gallery_vectors, gallery_labels=gallery_labels
        )
    page = (tmp_path / "out" / "index.html").read_text()
    shown = {m: float(v) for m, v in re.findall(r'data-metric="(recall@\d)">([0-9.]+)<', page)}
    assert shown == pytest.approx({k: expected[k] for k in ("recall@1", "recall@3")}, abs=5e-5)
    assert 0 < expected["recall@1"] < 1  # a non-trivial case: both marks appear on the page
    assert len(rows) == 3 * len(queries)
    for row in rows:  # the CSV's verdicts are the class folders'
        assert row["correct"] == str(
            int(re.search(r"class\d+", row["query"]).group() == re.search(r"class\d+", row["neighbour"]).group())
        )
        assert row["query"] != row["neighbour"]
    top1 = [row["correct"] == "1" for row in rows if row["rank"] == "1"]
    assert np.mean(top1) == pytest.approx(expected["recall@1"])
    assert page.count('data-verdict="correct"') > 0 and page.count('data-verdict="wrong"') > 0


def test_bad_inputs_get_one_line(trained_model, folders, tmp_path, capsys):
    _, model_file = trained_model
    runs = tmp_path / "runs"
    runs.mkdir()
    mlflow.MlflowClient(f"sqlite:///{runs / 'mlflow.db'}").search_experiments()  # an empty store
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken" / "c").mkdir(parents=True)
    (tmp_path / "broken" / "c" / "x.png").write_bytes(b"\x89PNG but not really")
    (tmp_path / "notes.pt").write_text("not a model")
    code = tmp_path / "echo.py"
    code.write_text(OTHER_MODEL_CODE)
    mlflow.pyfunc.save_model(tmp_path / "echo-model", python_model=str(code))
    all_images = folders / "all"
    capsys.readouterr()  # MLflow's own lines while the store and the model above were made
    cases = [
        (["--model", "models:/nope@champion", "--images", all_images], "cannot load model models:/nope@champion"),
        (["--model", model_file, "--images", tmp_path / "missing"], "image folder not found"),
        (["--model", model_file, "--images", tmp_path / "empty"], "no images"),
        (["--model", model_file, "--images", tmp_path / "broken"], "cannot read image"),
        (["--model", tmp_path / "notes.pt", "--images", all_images], "is not a tune_lsd checkpoint or model file"),
        (["--model", tmp_path / "no-such-model.pt", "--images", all_images], "model not found"),
        (["--model", tmp_path / "echo-model", "--images", all_images], "not a tune_lsd embedding model"),
    ]
    for args, message in cases:
        status, _, err = tune_lsd(capsys, "embed", *args, "--runs-dir", runs, "-o", tmp_path / "e.npy")
        assert status == 2 and err.startswith("error: ") and message in err, (args, err)
        assert err.count("\n") == 1, err
    status, _, err = tune_lsd(
        capsys, "embed", "--model", "models:/x@champion", "--images", all_images, "--runs-dir", tmp_path / "no-store"
    )
    assert status == 2 and "no MLflow store" in err and not (tmp_path / "no-store").exists()
    status, _, err = tune_lsd(capsys, "retrieve", "--model", model_file, "--gallery", all_images, "-k", 0)
    assert status == 2 and "-k must be 1 or more" in err
    assert not (tmp_path / "e.npy").exists()
