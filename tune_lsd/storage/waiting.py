"""Waiting for a store that does not answer.

A store that is down, restarting or throttling is waited for: every operation that fails
with a transient error (no connection, a reset, a timeout, HTTP 5xx such as S3's 503
SlowDown) is tried again with back-off for up to the location's ``patience_s`` (the search's
``--storage-patience-s``), with one line when the waiting starts; only then does it fail, with
one line naming the store and what could not be done.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TypeVar

from tune_lsd.errors import TuneLsdError, first_line

DEFAULT_PATIENCE_S = 600.0  # how long a store that does not answer is waited for
FIRST_DELAY_S, LONGEST_DELAY_S = 1.0, 30.0  # back-off between tries: doubling from the first to the longest
# What pyarrow's S3 errors (AWS SDK error names, curl's texts) and the OS say when a store is
# down, restarting, overloaded or the network dropped: worth another try. Anything else
# (no such key, no bucket, access denied) fails at once.
TRANSIENT_MARKERS = (
    "network_connection",
    "could not connect",
    "connection refused",
    "connection reset",
    "connection was reset",
    "broken pipe",
    "timed out",
    "timeout",
    "slowdown",
    "slow_down",
    "service unavailable",
    "service_unavailable",
    "internal_failure",
    "internalerror",
    "throttl",
    "http response code: 5",
    "http status 5",
    "curlcode: 52",  # empty reply from server
    "curlcode: 56",  # failure receiving network data
)
Result = TypeVar("Result")


class StorageError(TuneLsdError, RuntimeError):
    """The storage cannot be reached or used (message is one line)."""


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the store is (for now) unreachable, overloaded or failing, so that
    the same operation may succeed later."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    if not isinstance(error, OSError) or isinstance(error, FileNotFoundError):
        return False
    text = str(error).lower()
    return any(marker in text for marker in TRANSIENT_MARKERS)


def retrying(
    operation: Callable[[], Result],
    what: str,
    uri: str,
    patience_s: float = DEFAULT_PATIENCE_S,
    log: Callable[[str], None] | None = None,
) -> Result:
    """``operation()``, tried again with back-off while it fails transiently (:func:`is_transient`),
    for up to ``patience_s`` seconds. ``what`` names the operation in the lines: one when the
    waiting starts (``log``, default stderr), one when it ends, and a :class:`StorageError`
    naming the store when the patience runs out. Any other error is raised at once, and every
    error when ``patience_s`` is 0."""
    if patience_s <= 0:
        return operation()
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    started = time.monotonic()
    delay, waiting = FIRST_DELAY_S, False
    while True:
        try:
            result = operation()
        except Exception as error:
            if not is_transient(error):
                raise
            waited = time.monotonic() - started
            if waited + delay > patience_s:
                raise StorageError(
                    f"storage {redacted(uri)} did not answer for {waited:.0f} s (--storage-patience-s "
                    f"{patience_s:g}): {what} failed: {first_line(error, 200)}"
                ) from None
            if not waiting:
                say(
                    f"storage {redacted(uri)}: {what} failed ({first_line(error, 160)}); "
                    f"trying again for up to {patience_s:g} s"
                )
                waiting = True
            time.sleep(delay)
            delay = min(2 * delay, LONGEST_DELAY_S)
            continue
        if waiting:
            say(f"storage {redacted(uri)}: {what} done after {time.monotonic() - started:.0f} s of waiting")
        return result


def redacted(uri: str) -> str:
    """The URI without its query (endpoint and scheme options): what a line needs to name the store."""
    return uri.split("?", 1)[0]
