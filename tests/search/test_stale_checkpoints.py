"""tune_lsd/search/stale_checkpoints.py: Ray's traceback about deleting a checkpoint that is
already gone is dropped (raised by Ray's own delete function), every other record is kept."""

from __future__ import annotations

import logging
import sys

import pyarrow.fs
from ray.train._internal.storage import _delete_fs_path

from tune_lsd.search.stale_checkpoints import RAY_CONTROLLER_LOGGER, StaleCheckpointDeletion


def record(message: str, error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        exc_info = sys.exc_info()
    return logging.LogRecord(RAY_CONTROLLER_LOGGER, logging.ERROR, __file__, 1, message, None, exc_info)


def ray_deleting(path: str) -> BaseException:
    try:
        _delete_fs_path(fs=pyarrow.fs.LocalFileSystem(), fs_path=path)
    except FileNotFoundError as error:
        return error
    raise AssertionError("Ray deleted a path that does not exist without an error")


def test_only_ray_failing_to_delete_a_gone_checkpoint_is_dropped(tmp_path):
    quiet = StaleCheckpointDeletion()
    gone = ray_deleting(str(tmp_path / "checkpoint_000001"))
    assert not quiet.filter(record("Trial %s: Error handling checkpoint %s", gone))
    # the same error elsewhere, and another error while handling a checkpoint, stay
    assert quiet.filter(record("Trial %s: Error handling checkpoint %s", FileNotFoundError("other")))
    assert quiet.filter(record("Trial %s: Error handling checkpoint %s", OSError("disk full")))
    assert quiet.filter(record("Trial %s: Error processing restore", gone))
    plain = logging.LogRecord(RAY_CONTROLLER_LOGGER, logging.WARNING, __file__, 1, "no error", None, None)
    assert quiet.filter(plain)
