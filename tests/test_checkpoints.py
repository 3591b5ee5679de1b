"""trainables/checkpoints.py: a checkpoint is used only when every file its manifest names is
in the store with its size; otherwise the trial's whole checkpoint of the highest iteration."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.fs
import pytest

from trainables.checkpoints import MANIFEST_FILE, manifest_iteration, newest_whole_checkpoint, write_manifest

REQUIRED = ("trainer.pt", "best.pt")


def checkpoint(trial: Path, index: int, iteration: int) -> Path:
    """A checkpoint folder as the trainable writes it: two files, then the manifest."""
    folder = trial / f"checkpoint_{index:06d}"
    folder.mkdir(parents=True)
    (folder / "trainer.pt").write_bytes(b"t" * (1000 + index))
    (folder / "best.pt").write_bytes(b"b" * 10)
    write_manifest(folder, iteration)
    return folder


def test_the_manifest_names_every_file_with_its_size_and_the_iteration(tmp_path):
    folder = checkpoint(tmp_path, 3, iteration=4)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest == {"iteration": 4, "files": {"best.pt": 10, "trainer.pt": 1003}}


@pytest.mark.parametrize(
    "damage, problem",
    [
        (lambda f: (f / "trainer.pt").unlink(), "trainer.pt is missing"),
        (lambda f: (f / "trainer.pt").write_bytes(b"t" * 10), "trainer.pt has 10 of its 1,002 bytes"),
        (lambda f: (f / MANIFEST_FILE).write_text('{"iteration": 3, "fi'), f"its {MANIFEST_FILE} is cut short"),
        (lambda f: ((f / MANIFEST_FILE).unlink(), (f / "best.pt").unlink()), "best.pt is missing"),
    ],
    ids=["file missing", "file short", "manifest short", "no manifest and a file missing"],
)
def test_a_damaged_checkpoint_falls_back_to_the_newest_earlier_whole_one(tmp_path, damage, problem):
    fs = pyarrow.fs.LocalFileSystem()
    checkpoint(tmp_path, 0, iteration=1)
    second = checkpoint(tmp_path, 1, iteration=2)
    third = checkpoint(tmp_path, 2, iteration=3)
    assert newest_whole_checkpoint(fs, str(third), REQUIRED) == (str(third), None)
    damage(third)
    path, found = newest_whole_checkpoint(fs, str(third), REQUIRED)
    assert path == str(second) and found is not None and found.startswith(problem)
    assert manifest_iteration(fs, str(second)) == 2
    (second / "best.pt").unlink()  # the one before is damaged too: the first
    assert newest_whole_checkpoint(fs, str(third), REQUIRED)[0] == str(tmp_path / "checkpoint_000000")


def test_a_checkpoint_deleted_since_ray_saved_its_state_gives_the_trials_newest_whole_one(tmp_path):
    """Ray Tune saves its state on its period; meanwhile the trial went on and Ray deleted the
    checkpoint that state names (num_to_keep): the trial restores from its newest one (by the
    iteration of its manifest, not its name: a resumed trial numbers its checkpoints again)."""
    fs = pyarrow.fs.LocalFileSystem()
    named = checkpoint(tmp_path, 0, iteration=1)
    checkpoint(tmp_path, 1, iteration=4)
    newest = checkpoint(tmp_path, 2, iteration=5)
    cut = checkpoint(tmp_path, 3, iteration=6)
    (cut / "trainer.pt").write_bytes(b"")  # its upload was cut short
    renumbered = checkpoint(tmp_path, 4, iteration=3)
    for file in named.iterdir():
        file.unlink()
    named.rmdir()

    assert newest_whole_checkpoint(fs, str(named), REQUIRED) == (str(newest), "it is empty or gone")
    assert newest_whole_checkpoint(fs, str(renumbered), REQUIRED) == (str(renumbered), None)  # whole: Ray's choice


def test_a_checkpoint_without_a_manifest_is_whole_when_its_files_are_there(tmp_path):
    """Written before manifests existed (a search resumed after an upgrade): an object store
    keeps each file whole or not at all, so the files being there is enough."""
    fs = pyarrow.fs.LocalFileSystem()
    old = checkpoint(tmp_path, 0, iteration=1)
    (old / MANIFEST_FILE).unlink()
    assert newest_whole_checkpoint(fs, str(old), REQUIRED) == (str(old), None)


def test_no_whole_checkpoint_at_all_is_none_with_the_reason(tmp_path):
    fs = pyarrow.fs.LocalFileSystem()
    only = checkpoint(tmp_path, 0, iteration=1)
    (only / "trainer.pt").unlink()
    assert newest_whole_checkpoint(fs, str(only), REQUIRED) == (None, "trainer.pt is missing")
    assert newest_whole_checkpoint(fs, str(tmp_path / "checkpoint_000009"), REQUIRED) == (None, "it is empty or gone")


def test_the_result_ray_restores_from_is_that_of_a_whole_checkpoint_with_its_iteration(tmp_path, capsys):
    """whole_result: Ray's result as it is when its checkpoint is whole; else the earlier whole
    checkpoint's, with the iteration of its manifest and one line; else one error line."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune import Checkpoint

    from trainables.checkpoints import whole_result

    fs = pyarrow.fs.LocalFileSystem()
    checkpoint(tmp_path, 0, iteration=1)
    second = checkpoint(tmp_path, 1, iteration=2)
    chosen = _TrainingResult(Checkpoint(str(second), filesystem=fs), metrics={"training_iteration": 2, "epoch": 2})
    assert whole_result(chosen, "t1", REQUIRED, ValueError) is chosen
    (second / "trainer.pt").unlink()
    earlier = whole_result(chosen, "t1", REQUIRED, ValueError)
    assert earlier.checkpoint.path == str(tmp_path / "checkpoint_000000")
    assert earlier.metrics == {"training_iteration": 1, "epoch": 2}
    assert "trial t1: its checkpoint" in capsys.readouterr().err
    (tmp_path / "checkpoint_000000" / "best.pt").unlink()
    with pytest.raises(ValueError, match="trainer.pt is missing\\) and no other checkpoint of it is"):
        whole_result(chosen, "t1", REQUIRED, ValueError)
