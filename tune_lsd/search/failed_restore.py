"""Ray Tune starting a resumed search afresh when it cannot read the search's saved state.

Ray Tune's controller restores a resumed search from the newest experiment state in the
storage. When that read fails (the object store is down or restarting, the network dropped)
it logs "Failed to restore the run state." and "Restarting experiment." and goes on with no
trials at all: the searcher starts over, the finished trials are unknown to it, and their
MLflow runs would be taken for those of lost trials. A resumed search must never do that, so
:class:`FailedRestore` turns Ray's log record into :class:`RestoreFailed`, raised where Ray
caught the error, before any trial starts; the runner then waits for the store and restores
again (:func:`tune_lsd.search.runner.run_search`).
"""

from __future__ import annotations

import logging

from tune_lsd.errors import first_line
from tune_lsd.search.settings import SearchError
from tune_lsd.search.stale_checkpoints import RAY_CONTROLLER_LOGGER

RAY_RESTORE_FAILED = "Failed to restore the run state."  # what Ray logs before starting afresh


class RestoreFailed(SearchError):
    """Ray Tune could not read a resumed search's saved state (its cause: Ray's error)."""


class FailedRestore(logging.Filter):
    """Raises :class:`RestoreFailed` on Ray's record of a failed restore (a logging filter runs
    inside the ``except`` block that logs the record, so the error leaves Ray's controller)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.msg != RAY_RESTORE_FAILED:
            return True
        cause = record.exc_info[1] if record.exc_info else None
        reason = first_line(cause, 200) if cause else "no reason given"
        raise RestoreFailed(f"Ray Tune could not read the search's saved state: {reason}") from cause


def refuse_fresh_restarts() -> None:
    """Install the filter on Ray Tune's controller logger (once per process)."""
    logger = logging.getLogger(RAY_CONTROLLER_LOGGER)
    if not any(isinstance(f, FailedRestore) for f in logger.filters):
        logger.addFilter(FailedRestore())
