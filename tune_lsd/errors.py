"""tune_lsd's errors: the base of every expected failure, and the one line a message quotes
from an exception it caught.

Every error a user can cause or fix (a wrong config key, a missing dataset folder, an
unreachable tracking server, a NaN loss) is a :class:`TuneLsdError` with a one-line message:
the command line prints that line and exits with status 2. Any other exception is a bug,
printed with its traceback. Each subclass also derives from the builtin error it always was
(``ConfigError`` is a ``ValueError``), so code that catches those keeps working.
"""

from __future__ import annotations


class TuneLsdError(Exception):
    """An expected failure whose message is one line meant for the user (what is wrong, and
    how to fix it where that is known)."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of ``str(error)``, cut to ``limit`` characters; the exception's
    type name when its message is empty (``OSError()``, ``TimeoutError()``, ...)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__
