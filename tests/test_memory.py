"""tune_lsd/data/memory.py: the data's size from its listing alone, checked against the node's
memory and Ray's object store before anything is decoded or started."""

from __future__ import annotations

from pathlib import Path

import pytest
from searching import tune_lsd

from tune_lsd.data.datasets import data_footprint
from tune_lsd.data.memory import DataMemoryError, available_memory, check_memory, check_object_store

SOP_TRAIN, SOP_TEST = 59_551, 60_502  # Stanford Online Products' listing sizes


def sop_listing(root: Path, train: int = SOP_TRAIN, test: int = SOP_TEST) -> Path:
    """SOP's two listing files, with no images: enough for the estimate."""
    root.mkdir(parents=True, exist_ok=True)
    for part, count in (("train", train), ("test", test)):
        rows = ["image_id class_id super_class_id path"]
        rows += [f"{i + 1} {i // 5 + 1} 1 bicycle_final/{i}.JPG" for i in range(count)]
        (root / f"Ebay_{part}.txt").write_text("\n".join(rows) + "\n")
    return root


def test_sop_at_256_px_is_23_6_gb_from_its_listing(tmp_path):
    footprint = data_footprint("sop", str(sop_listing(tmp_path / "sop")), 256)

    assert (footprint.train_images, footprint.test_images) == (SOP_TRAIN, SOP_TEST)
    assert footprint.bytes == (SOP_TRAIN + SOP_TEST) * 256 * 256 * 3
    assert "sop at 256 px: 59,551 train + 60,502 test images = 23.6 GB decoded" in footprint.describe()


def test_array_datasets_count_without_decoding():
    footprint = data_footprint("glyphs", None, 32)

    assert footprint.channels == 1 and footprint.train_images > 1000 and footprint.test_images > 1000


def test_too_big_for_memory_says_what_to_lower(tmp_path):
    footprint = data_footprint("sop", str(sop_listing(tmp_path / "sop")), 256)

    check_memory(footprint, available=30 * 10**9)
    with pytest.raises(
        DataMemoryError, match=r"23.6 GB decoded .*, but this node has 16.0 GB .*lower data.load_size \(now 256\)"
    ):
        check_memory(footprint, available=16 * 10**9)
    # It would fit, but leave the processes too little: 23.6 GB of 24.0 GB (this machine's case).
    with pytest.raises(DataMemoryError, match=r"has 24.0 GB of memory available \(the data may take 80%\)"):
        check_memory(footprint, available=24 * 10**9)
    with pytest.raises(
        DataMemoryError, match=r"4 copies \(one per concurrent trial\) need 94.4 GB, .*--max-concurrent"
    ):
        check_memory(footprint, copies=4, available=30 * 10**9)


def test_too_big_for_the_object_store_says_what_to_raise(tmp_path):
    footprint = data_footprint("sop", str(sop_listing(tmp_path / "sop")), 256)

    check_object_store(footprint, 24 * 10**9)
    check_object_store(footprint, None)  # unknown: not checked
    with pytest.raises(DataMemoryError, match=r"object store holds 8.0 GB: lower data.load_size .*--object-store-mb"):
        check_object_store(footprint, 8 * 10**9)


def test_available_memory_is_read_from_the_kernel():
    available = available_memory()

    assert available is not None and 10**8 < available < 2**50


@pytest.mark.parametrize("command", ["train", "search"])
def test_commands_stop_with_one_line_before_decoding(tmp_path, command):
    """SOP at 1024 px (378 GB) fits no test machine: one line, exit 2, no run folder, no Ray."""
    root = sop_listing(tmp_path / "sop")
    data = ["--set", "data.dataset=sop", "--set", f"data.root={root}", "--set", "data.load_size=1024"]
    args = (
        ["train", "--config", "glyphs_demo", *data]
        if command == "train"
        else ["search", "--space", "lsd", "--name", "big", "--num-samples", "1", *data]
    )

    result = tune_lsd(*args, cwd=tmp_path, timeout=120)

    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "sop at 1024 px" in errors[0] and "377.7 GB decoded" in errors[0]
    assert "lower data.load_size (now 1024)" in errors[0]
    assert "dataset: sop at 1024 px" in result.stdout  # the estimate is printed with the data line
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
