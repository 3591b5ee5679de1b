"""tune_lsd/data/cache.py: decode once per machine, memory-map afterwards, decode again when an
image changes; `tune-lsd cache ls|clear`; data.cache=false keeps nothing."""

from __future__ import annotations

import os

import numpy as np
import pytest
from fake_datasets import write_fake_dataset
from PIL import Image
from searching import tune_lsd

from tune_lsd.config import Config
from tune_lsd.data import cache, decoding
from tune_lsd.data.datasets import load_dataset
from tune_lsd.data.splits import build_splits


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("TUNE_LSD_CACHE", str(folder))
    return folder


@pytest.fixture
def images(tmp_path):
    files = []
    for value in range(5):
        files.append(tmp_path / "images" / f"{value}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(np.full((12, 18, 3), 50 * value, np.uint8)).save(files[-1])
    return files


def forbid_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(cache, "decode_into", fail)


def test_second_load_is_memory_mapped_without_decoding(empty_cache, images, monkeypatch):
    first = cache.cached_decode(images, 8, "five")
    forbid_decoding(monkeypatch)

    second = cache.cached_decode(images, 8, "five")

    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, decoding.decode_all(images, 8))
    np.testing.assert_array_equal(first, second)
    [entry] = cache.list_entries()
    assert (entry.description, entry.images, entry.size) == ("five", 5, 8)
    assert entry.bytes >= 5 * 8 * 8 * 3
    second[0] = 0  # copy-on-write: the views are writable, the file is not changed
    np.testing.assert_array_equal(cache.cached_decode(images, 8, "five")[0], first[0])


def test_a_changed_image_or_another_size_makes_a_new_entry(empty_cache, images):
    cache.cached_decode(images, 8, "five")
    Image.fromarray(np.full((12, 18, 3), 7, np.uint8)).save(images[2])
    os.utime(images[2], ns=(1, 1))  # a different modification time even within the clock's resolution

    changed = cache.cached_decode(images, 8, "five")
    cache.cached_decode(images, 6, "five")

    assert int(changed[2].mean()) == 7
    assert len(cache.list_entries()) == 3


def test_an_interrupted_decode_leaves_no_entry(empty_cache, images, monkeypatch):
    decode_image = decoding.decode_image

    def fail_on_the_third(path, size, draft=True):
        if path == images[2]:
            raise KeyboardInterrupt
        return decode_image(path, size, draft)

    monkeypatch.setattr(decoding, "decode_image", fail_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        cache.cached_decode(images, 8, "five")

    assert cache.list_entries() == []
    assert not any((empty_cache / cache.DECODED_FOLDER).iterdir())  # no half-written folder either


def test_datasets_load_through_the_cache_unless_switched_off(empty_cache, tmp_path, monkeypatch):
    write_fake_dataset("cub", tmp_path / "cub", classes=6, per_class=2)
    config = Config().with_overrides(
        {
            "data.dataset": "cub",
            "data.root": str(tmp_path / "cub"),
            "data.image_size": 16,
            "data.batch_size": 4,
            "data.samples_per_class": 2,
            "data.val_fraction": 0,
        }
    )
    uncached = build_splits(config.with_overrides({"data.cache": False}).data, 0)
    assert cache.list_entries() == []

    first = load_dataset("cub", str(tmp_path / "cub"), 16)
    forbid_decoding(monkeypatch)
    second = build_splits(config.data, 0)

    assert [entry.description for entry in cache.list_entries()] == [
        f"cub train in {tmp_path / 'cub'}",
        f"cub test in {tmp_path / 'cub'}",
    ]
    np.testing.assert_array_equal(second.test.images, uncached.test.images)
    np.testing.assert_array_equal(first.train.images, uncached.train.images)


def test_cache_command_lists_and_clears(empty_cache, images, tmp_path):
    cache.cached_decode(images, 8, "five images")

    listed = tune_lsd("cache", "ls", cwd=tmp_path)
    cleared = tune_lsd("cache", "clear", cwd=tmp_path)
    after = tune_lsd("cache", "ls", cwd=tmp_path)

    assert listed.returncode == 0, listed.stderr
    assert f"1 decoded datasets in {empty_cache}" in listed.stdout
    assert "five images" in listed.stdout and "5 images at    8 px" in listed.stdout
    assert cleared.returncode == 0 and "removed 1 decoded datasets" in cleared.stdout
    assert "0 decoded datasets" in after.stdout and cache.list_entries() == []
