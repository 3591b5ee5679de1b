"""tune_lsd/serving/embedder.py and pyfunc_model.py: a model file's embeddings are the engine's,
before and after torch.export; preprocessing of any input size and colour; bad files and folders."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tune_lsd.data.transforms import center_crop, normalise, resize
from tune_lsd.engine import CheckpointError, load_model_state
from tune_lsd.serving.embedder import (
    ImageReadError,
    embed_images,
    embedder_from_snapshot,
    read_image_folder,
    write_model_files,
)
from tune_lsd.serving.pyfunc_model import ImageEmbedder, to_network_input


def test_model_file_and_exported_network_give_the_engines_embeddings(trained_model, tmp_path):
    trainer, path = trained_model
    images = trainer.splits.test.images
    expected = trainer.embed(trainer.splits.test).numpy()
    snapshot = load_model_state(path)
    in_process = embedder_from_snapshot(snapshot).embed(images)
    np.testing.assert_allclose(in_process, expected, atol=1e-5)
    files, preprocessing = write_model_files(snapshot, tmp_path / "model")
    exported = ImageEmbedder(torch.export.load(files["network"]).module(), preprocessing)
    np.testing.assert_allclose(exported.embed(images), expected, atol=1e-5)
    assert preprocessing["channels"] == 1 and preprocessing["embedding_dim"] == 32
    assert np.allclose(np.linalg.norm(expected, axis=1), 1, atol=1e-5)


def test_the_evaluation_centre_crop_is_part_of_the_model(config_factory, tmp_path):
    from tune_lsd.engine import Trainer, save_file

    trainer = Trainer(config_factory(**{"data.load_size": 36, "data.image_size": 24, "data.eval_crop": 0.75}))
    save_file(
        {"config": trainer.config.to_dict(), "epoch": 0, "history": [], "student": trainer.model.state_dict()},
        tmp_path / "model.pt",
    )
    snapshot = load_model_state(tmp_path / "model.pt")
    files, preprocessing = write_model_files(snapshot, tmp_path / "model")
    assert preprocessing["crop"] == 0.75 and preprocessing["image_size"] == 24
    exported = ImageEmbedder(torch.export.load(files["network"]).module(), preprocessing)
    expected = trainer.embed(trainer.splits.test).numpy()
    np.testing.assert_allclose(exported.embed(trainer.splits.test.images), expected, atol=1e-5)
    without_crop = trainer.model(resize(normalise(torch.from_numpy(trainer.splits.test.images[:4])), 24))
    assert not np.allclose(without_crop.detach().numpy(), expected[:4], atol=1e-3)  # the crop matters


def test_a_full_training_checkpoint_is_a_model_file_too(trained_model, tmp_path):
    trainer, _ = trained_model
    trainer.save(tmp_path / "best.pt")
    vectors = embedder_from_snapshot(load_model_state(tmp_path / "best.pt")).embed(trainer.splits.val.images[:8])
    np.testing.assert_allclose(vectors, trainer.embed(trainer.splits.val).numpy()[:8], atol=1e-5)


def test_preprocessing_of_other_sizes_and_colours_is_the_engines_transform():
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (3, 50, 40, 1), dtype=np.uint8)
    engine = resize(normalise(torch.from_numpy(gray)), 32)  # what training does before the network
    assert torch.equal(to_network_input(gray, 1, 32, 0.5, 0.5), engine)
    assert torch.equal(to_network_input(gray[..., 0], 1, 32, 0.5, 0.5), engine)  # (N, H, W) too
    colour = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    luma = colour.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    expected = torch.from_numpy(luma / 127.5 - 1)[:, None]
    assert torch.allclose(to_network_input(colour, 1, 32, 0.5, 0.5), expected, atol=1e-5)
    with_alpha = np.concatenate([colour, np.zeros_like(colour[..., :1])], axis=-1)
    assert torch.equal(to_network_input(with_alpha, 3, 32, 0.5, 0.5), to_network_input(colour, 3, 32, 0.5, 0.5))
    rgb_from_gray = to_network_input(gray, 3, 32, 0.5, 0.5)
    assert rgb_from_gray.shape == (3, 3, 32, 32) and torch.equal(rgb_from_gray[:, 0], rgb_from_gray[:, 2])
    cropped = resize(center_crop(normalise(torch.from_numpy(gray)), 0.875), 32)
    assert torch.equal(to_network_input(gray, 1, 32, 0.5, 0.5, crop=0.875), cropped)
    assert center_crop(normalise(torch.from_numpy(gray)), 0.875).shape[-2:] == (44, 35)
    with pytest.raises(ValueError, match="uint8"):
        to_network_input(gray.astype(np.float32), 1, 32, 0.5, 0.5)
    with pytest.raises(ValueError, match="C in 1, 3, 4"):
        to_network_input(rng.integers(0, 256, (2, 8, 8, 2), dtype=np.uint8), 1, 32, 0.5, 0.5)


def test_images_of_mixed_sizes_are_embedded_as_one_by_one(trained_model):
    trainer, path = trained_model
    embedder = embedder_from_snapshot(load_model_state(path))
    images = [
        np.asarray(Image.fromarray(im[..., 0]).resize((s, s)))[..., None]
        for im, s in zip(trainer.splits.test.images[:7], [32, 32, 48, 48, 48, 32, 20])
    ]
    together = embed_images(embedder, iter(images), len(images), batch_size=2, progress=False)
    one_by_one = np.concatenate([embedder.embed(im[None]) for im in images])
    np.testing.assert_allclose(together, one_by_one, atol=1e-6)


def test_files_that_are_not_models_get_one_line(tmp_path):
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    for path, message in [
        (tmp_path / "missing.pt", "file not found"),
        (tmp_path / "notes.txt", "is not a tune_lsd checkpoint or model file"),
        (tmp_path / "other.pt", "no config and student weights"),
    ]:
        with pytest.raises(CheckpointError, match=message) as error:
            load_model_state(path)
        assert "\n" not in str(error.value)


def test_image_folders_labels_and_bad_folders(tmp_path):
    for name in ("b", "a"):
        (tmp_path / "classes" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10 + i, 12), (40 * i, 90, 200)).save(tmp_path / "classes" / name / f"{i}.png")
    folder = read_image_folder(tmp_path / "classes", channels=1)
    assert folder.classes == ["a", "b"] and folder.labels.tolist() == [0, 0, 1, 1]
    assert [im.shape for im in folder] == [(12, 10), (12, 11)] * 2  # grayscale, each its own size, decoded on access
    assert read_image_folder(tmp_path / "classes", channels=3)[1].shape == (12, 11, 3)
    Image.new("L", (8, 8)).save(tmp_path / "classes" / "loose.png")  # not every image in a class folder: no labels
    unlabelled = read_image_folder(tmp_path / "classes", channels=1)
    assert unlabelled.labels is None and len(unlabelled) == 5
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    for name, message in [("missing", "image folder not found"), ("empty", "no images")]:
        with pytest.raises(FileNotFoundError, match=message):
            read_image_folder(tmp_path / name, 1)
    with pytest.raises(ImageReadError, match="cannot read image .*x.png"):
        read_image_folder(tmp_path / "broken", 1)[0]
