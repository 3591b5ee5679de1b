"""tune_lsd/data/remote.py: a dataset whose data.root is in object storage (SeaweedFS's S3
gateway) is mirrored to the machine once, decoded like a local one, and fetched again only
where the bucket changed."""

from __future__ import annotations

import numpy as np
import pyarrow.fs
import pytest
from fake_datasets import write_fake_dataset
from PIL import Image

from tune_lsd.data import cache, remote
from tune_lsd.data.datasets import data_footprint, load_dataset
from tune_lsd.storage import Location, StorageError


@pytest.fixture
def bucket_dataset(object_store, tmp_path, monkeypatch):
    """A CUB-format tree on local disk and the same tree in the bucket: (local root, URI)."""
    for key, value in object_store.credentials().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TUNE_LSD_CACHE", str(tmp_path / "cache"))
    write_fake_dataset("cub", tmp_path / "cub", classes=6, per_class=3)
    uri = object_store.uri(f"datasets/{tmp_path.name}/CUB_200_2011")
    filesystem, path = Location(uri)._fs()
    pyarrow.fs.copy_files(
        str(tmp_path / "cub"), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
    )
    return tmp_path / "cub", uri


def count_fetches(monkeypatch) -> list[int]:
    counts: list[int] = []
    fetch = remote._fetch

    def counting(source, target, files, log):
        counts.append(len(files))
        fetch(source, target, files, log)

    monkeypatch.setattr(remote, "_fetch", counting)
    return counts


def test_a_bucket_dataset_loads_as_the_same_tree_on_disk(bucket_dataset, monkeypatch):
    local, uri = bucket_dataset
    fetches = count_fetches(monkeypatch)
    lines: list[str] = []

    footprint = data_footprint("cub", uri, 16, log=lines.append)
    from_bucket = load_dataset("cub", uri, 16, log=lines.append)
    from_disk = load_dataset("cub", str(local), 16, cache=False)

    assert fetches == [18]  # 18 images, fetched once: the footprint's listing, then the load reuses them
    assert (footprint.train_images, footprint.test_images) == (9, 9)
    np.testing.assert_array_equal(from_bucket.train.images, from_disk.train.images)
    np.testing.assert_array_equal(from_bucket.test.labels, from_disk.test.labels)
    assert [line for line in lines if "fetched now" in line] == [
        f"data.root {uri}: 18 files mirrored in {remote.mirror_folder(uri)} (18 fetched now)"
    ]


def test_a_second_load_fetches_and_decodes_nothing_and_a_changed_object_is_fetched_again(bucket_dataset, monkeypatch):
    local, uri = bucket_dataset
    first = load_dataset("cub", uri, 16)
    fetches = count_fetches(monkeypatch)

    load_dataset("cub", uri, 16)
    assert fetches == [] and len(cache.list_entries()) == 2

    changed = sorted((local / "images" / "001.Bird_1").glob("*.jpg"))[0]  # the first training image
    replacement = local.parent / "replacement.png"
    Image.fromarray(np.full((30, 20, 3), 7, np.uint8)).save(replacement)
    filesystem, path = (Location(uri) / changed.relative_to(local).as_posix())._fs()
    with filesystem.open_output_stream(path) as stream:
        stream.write(replacement.read_bytes())

    again = load_dataset("cub", uri, 16)

    assert fetches == [1]  # only the changed object
    assert int(again.train.images[0].mean()) == 7 and int(first.train.images[0].mean()) != 7
    np.testing.assert_array_equal(again.train.images[1:], first.train.images[1:])
    assert len(cache.list_entries()) == 3  # the changed training set decoded again, the test set not


def test_a_bucket_root_that_is_empty_or_refused_is_one_line(bucket_dataset, object_store, monkeypatch):
    _, uri = bucket_dataset
    with pytest.raises(StorageError, match="holds no files"):
        load_dataset("cub", object_store.uri("datasets/nothing-here"), 16)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match=r"^data.root s3://.*") as error:
        data_footprint("cub", uri, 16)
    assert "\n" not in str(error.value) and "wrong" not in str(error.value)
