"""The one line that tune_lsd's error messages quote from an exception they caught."""

from __future__ import annotations


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first non-blank line of ``str(error)``, cut to ``limit`` characters; the exception's
    type name when its message is empty (``OSError()``, ``TimeoutError()``, ...)."""
    for line in str(error).splitlines():
        if line.strip():
            return line.strip()[:limit]
    return type(error).__name__
