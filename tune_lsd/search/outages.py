"""What the driver says while the search's storage does not answer.

Ray Tune copies the search's state to the storage every few seconds and logs a traceback each
time a copy fails; during an outage of a minute that is dozens of tracebacks, and nothing
says that the trials are waiting, not failing. While a search runs, :func:`outage_lines`
replaces them with one line when the storage has not answered for ``QUIET_S`` (a blip of a
flaky store passes in silence) and one when it answers again (the next checkpoint a trial
saves there). Errors that are not an outage are left to Ray.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from tune_lsd.errors import first_line
from tune_lsd.storage import is_transient, redacted

# The modules of Ray Tune that log failed copies to the storage (each logs to its own logger).
RAY_STORAGE_LOGGERS = (
    "ray.train._internal.syncer",
    "ray.train._internal.storage",
    "ray.tune.execution.experiment_state",
)
QUIET_S = 10.0  # failures for less than this (a flaky store that answers the next try) say nothing


class OutageLines(logging.Filter):
    """A filter on Ray's storage loggers that turns an outage into two lines of its own."""

    def __init__(
        self, uri: str, patience_s: float, log: Callable[[str], None] = print, quiet_s: float = QUIET_S
    ) -> None:
        super().__init__()
        self.uri, self.patience_s, self.log, self.quiet_s = redacted(uri), patience_s, log, quiet_s
        self.down_since: float | None = None  # the first failure since the storage last answered
        self.said = False  # whether the outage's line was printed

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        message = record.getMessage()
        if not ((error is not None and is_transient(error)) or is_transient(OSError(message))):
            return True  # not an outage: Ray's own record
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
        if not self.said and now - self.down_since >= self.quiet_s:
            self.said = True
            reason = first_line(error, 160) if error is not None else _reason(message)
            self.log(
                f"storage {self.uri} does not answer ({reason}): the trials train on and wait for it to save "
                f"checkpoints (up to {self.patience_s:g} s), and Ray Tune's copies of the search's state are "
                "tried again"
            )
        return False

    def answered(self, what: str) -> None:
        """Something reached the storage again (``what``): say so once, if it had stopped answering."""
        if self.said and self.down_since is not None:
            self.log(f"storage {self.uri} answers again after {time.monotonic() - self.down_since:.0f} s ({what})")
        self.down_since, self.said = None, False


def _reason(message: str) -> str:
    """The line of a logged traceback that names the error (pyarrow's ``OSError: ...``)."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    named = [line for line in lines if line.startswith("OSError") or "Error" in line.split(":", 1)[0]]
    return (named[-1] if named else lines[-1] if lines else "no answer")[:160]


@contextmanager
def outage_lines(
    uri: str, patience_s: float, log: Callable[[str], None] = print, quiet_s: float = QUIET_S
) -> Iterator[OutageLines]:
    """While the block runs, Ray's storage loggers report an outage in :class:`OutageLines`' two lines."""
    lines = OutageLines(uri, patience_s, log, quiet_s)
    loggers = [logging.getLogger(name) for name in RAY_STORAGE_LOGGERS]
    for logger in loggers:
        logger.addFilter(lines)
    try:
        yield lines
    finally:
        for logger in loggers:
            logger.removeFilter(lines)
