"""tune_lsd/data/datasets.py and glyphs.py: standard layouts (tiny fake trees), bundled glyphs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from fake_datasets import write_fake_dataset
from PIL import Image

from tune_lsd.data import glyphs as glyph_module
from tune_lsd.data.datasets import FASHION_MNIST_ROOT, DatasetError, load_dataset


def write_image(path: Path, value: int, size=(20, 14)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_cub_layout(tmp_path):
    for c in range(1, 5):
        for i in range(3):
            write_image(tmp_path / "images" / f"{c:03d}.Bird_{c}" / f"b{i}.jpg", 10 * c + i)
    split = load_dataset("cub", str(tmp_path), 16)
    assert split.train.images.shape == (6, 16, 16, 3) and split.train.images.dtype == np.uint8
    assert set(split.train.labels) == {0, 1} and set(split.test.labels) == {2, 3}  # first half train


def test_cars_layout(tmp_path):
    from scipy.io import savemat

    records = np.zeros(8, dtype=[("relative_im_path", "O"), ("class", "O"), ("test", "O")])
    for i in range(8):
        write_image(tmp_path / "car_ims" / f"{i:06d}.jpg", 20 * i)
        records[i] = (f"car_ims/{i:06d}.jpg", i % 4 + 1, 0)
    savemat(tmp_path / "cars_annos.mat", {"annotations": records})
    split = load_dataset("cars", str(tmp_path), 8)
    assert len(split.train) == 4 and len(split.test) == 4
    assert set(split.train.labels) == {0, 1} and set(split.test.labels) == {2, 3}


def test_sop_layout(tmp_path):
    for part, classes in (("train", (1, 2)), ("test", (3, 4))):
        lines = ["image_id class_id super_class_id path"]
        for c in classes:
            for i in range(2):
                rel = f"bicycle_final/{c}_{i}.JPG"
                write_image(tmp_path / rel, c * 10 + i)
                lines.append(f"{len(lines)} {c} 1 {rel}")
        (tmp_path / f"Ebay_{part}.txt").write_text("\n".join(lines) + "\n")
    split = load_dataset("sop", str(tmp_path), 8)
    assert len(split.train) == 4 and set(split.test.labels) == {3, 4}


def test_inshop_layout(tmp_path):
    rows = []
    for item, status in (("id_01", "train"), ("id_02", "train"), ("id_03", "query"), ("id_03", "gallery")):
        rel = f"img/WOMEN/Dresses/{item}/{len(rows)}_front.jpg"
        write_image(tmp_path / rel, len(rows) * 30)
        rows.append(f"{rel} {item} {status}")
    (tmp_path / "list_eval_partition.txt").write_text(
        f"{len(rows)}\nimage_name item_id evaluation_status\n" + "\n".join(rows)
    )
    split = load_dataset("inshop", str(tmp_path), 8)
    assert len(split.train) == 2 and len(split.test) == 2 and split.test.num_classes == 1
    assert split.train.is_query is None and split.test.is_query.tolist() == [True, False]  # query -> gallery


def test_inshop_test_set_is_evaluated_query_to_gallery(tmp_path):
    from tune_lsd.config import Config
    from tune_lsd.engine import Trainer
    from tune_lsd.metrics import retrieval_metrics

    write_fake_dataset("inshop", tmp_path, classes=10, per_class=3, size=16)  # 5 train items, 5 test items
    config = Config().with_overrides(
        {
            "data.dataset": "inshop",
            "data.root": str(tmp_path),
            "data.image_size": 16,
            "data.val_fraction": 0.0,
            "data.samples_per_class": 2,
            "data.batch_size": 4,
            "model.embedding_dim": 8,
            "eval.nmi": False,
            "eval.ks": [1, 2],
            "runtime.progress": False,
        }
    )
    trainer = Trainer(config)
    test = trainer.splits.test
    assert test.is_query.sum() == 5 and (~test.is_query).sum() == 10
    embeddings = trainer.embed(test).numpy()
    metrics = trainer.evaluate("test")
    expected = retrieval_metrics(
        embeddings[test.is_query],
        test.labels[test.is_query],
        (1, 2),
        nmi=False,
        gallery=embeddings[~test.is_query],
        gallery_labels=test.labels[~test.is_query],
    )
    assert {k: metrics[f"test/{k}"] for k in expected} == pytest.approx(expected)
    pooled = retrieval_metrics(embeddings, test.labels, (1, 2), nmi=False)
    assert pooled != expected  # the protocol matters on this set


def test_folder_layout(tmp_path):
    for part in ("train", "test"):
        for c in ("a", "b"):
            for i in range(2):
                write_image(tmp_path / part / c / f"{i}.png", 50 + i)
    split = load_dataset("folder", str(tmp_path), 12)
    assert split.train.images.shape == (4, 12, 12, 3) and split.test.num_classes == 2


@pytest.mark.parametrize("name", ["cub", "cars", "sop", "inshop", "folder"])
def test_missing_data_folder_is_one_clear_line(tmp_path, name):
    with pytest.raises(DatasetError) as error:
        load_dataset(name, str(tmp_path / "nowhere"), 32)
    assert "does not exist" in str(error.value) and "\n" not in str(error.value)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError) as error:
        load_dataset(name, str(empty), 32)
    assert "\n" not in str(error.value)


def test_unknown_dataset_and_missing_root():
    with pytest.raises(DatasetError, match="unknown dataset"):
        load_dataset("imagenet", None, 32)
    with pytest.raises(DatasetError, match="needs data.root"):
        load_dataset("cub", None, 32)


@pytest.mark.skipif(
    not (FASHION_MNIST_ROOT / "train-images-idx3-ubyte.gz").is_file(), reason="dataset-fashion-mnist not installed"
)
def test_fashion_mnist_from_debian_package():
    split = load_dataset("fashion_mnist", None, 28)
    assert split.train.images.shape == (35000, 28, 28, 1)
    assert set(split.train.labels) == {0, 1, 2, 3, 4} and set(split.test.labels) == {5, 6, 7, 8, 9}


def test_bundled_glyphs_are_small_real_and_class_disjoint():
    assert glyph_module.BUNDLED_PATH.stat().st_size <= 10 * 2**20
    glyphs = glyph_module.load_glyph_set()
    images, labels = glyphs["images"], glyphs["labels"]
    assert images.shape[1:] == (32, 32, 1) and images.dtype == np.uint8
    assert (images.reshape(len(images), -1).max(axis=1) > 0).all()  # no blank glyphs
    counts = np.bincount(labels)
    assert len(counts) == 500 and counts.min() >= 16
    assert glyphs["is_test_class"].sum() == 200
    assert len(set(glyphs["characters"])) == 500
    # within a class, every font's render is distinct (no twin fonts)
    for label in range(0, 500, 50):
        renders = {img.tobytes() for img in images[labels == label]}
        assert len(renders) == counts[label]
    split = load_dataset("glyphs", None, 32)
    assert split.train.num_classes == 300 and split.test.num_classes == 200


def test_glyph_render_crops_to_ink_and_drops_blank():
    from PIL import ImageFont

    font = ImageFont.load_default(size=40)
    image = glyph_module.render_glyph(font, "L", 16)
    assert image.shape == (16, 16) and image.max() > 0
    assert image[:, :1].max() == 0 or image[:1].max() == 0  # margin around the ink box
    assert glyph_module.render_glyph(font, " ", 16) is None


@pytest.mark.skipif(
    len(glyph_module.available_fonts()) < len(glyph_module.CURATED_FONTS), reason="CJK fonts not installed (make fonts)"
)
def test_bundled_glyphs_regenerate_bit_for_bit(tmp_path):
    out = tmp_path / "glyphs.npz"
    glyph_module.save_glyph_set(glyph_module.render_glyph_set(500, 32), out)
    digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert digest(out) == digest(glyph_module.BUNDLED_PATH)
