"""tune_lsd/search/failed_restore.py: Ray's record of a failed restore becomes an error raised
where Ray logs it (Ray would start the resumed search afresh); every other record passes."""

from __future__ import annotations

import logging

import pytest

from tune_lsd.search.failed_restore import RAY_RESTORE_FAILED, FailedRestore, RestoreFailed, refuse_fresh_restarts
from tune_lsd.search.stale_checkpoints import RAY_CONTROLLER_LOGGER
from tune_lsd.storage.waiting import is_transient

STORE_DOWN = OSError(
    "When listing objects under key 'chaos/ray/chaos/' in bucket 'tune-lsd': AWS Error NETWORK_CONNECTION during "
    "ListObjectsV2 operation: curlCode: 7, Could not connect to server"
)


def test_a_failed_restore_logged_as_ray_logs_it_raises_with_its_cause():
    refuse_fresh_restarts()
    refuse_fresh_restarts()  # (installed once)
    logger = logging.getLogger(RAY_CONTROLLER_LOGGER)
    assert sum(isinstance(f, FailedRestore) for f in logger.filters) == 1
    with pytest.raises(RestoreFailed, match="could not read the search's saved state: When listing objects") as raised:
        try:
            raise STORE_DOWN
        except Exception:
            logger.exception(RAY_RESTORE_FAILED)  # what TuneController.__init__ does (see test_canaries.py)
            pytest.fail("Ray's controller would go on and restart the experiment")
    assert raised.value.__cause__ is STORE_DOWN and is_transient(raised.value.__cause__)


def test_other_records_of_the_controller_pass():
    refuse = FailedRestore()
    for message in ("Restarting experiment.", "Trial %s: Error handling checkpoint %s", "Failed to restore"):
        record = logging.LogRecord(RAY_CONTROLLER_LOGGER, logging.ERROR, __file__, 1, message, None, None)
        assert refuse.filter(record)
