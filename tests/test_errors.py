"""tune_lsd/errors.py: the line an error message quotes from a caught exception."""

from __future__ import annotations

import pytest

from tune_lsd.errors import first_line


@pytest.mark.parametrize(
    "error, limit, expected",
    [
        (ValueError("bad value"), 300, "bad value"),
        (RuntimeError("\n  first real line  \nsecond line\n"), 300, "first real line"),
        (OSError("x" * 500), 200, "x" * 200),
        (TimeoutError(), 300, "TimeoutError"),  # an empty message: str() is "", the type still says something
        (KeyError(""), 300, "''"),  # KeyError's str() quotes its key
        (RuntimeError("   \n\t\n"), 300, "RuntimeError"),
    ],
)
def test_first_line(error, limit, expected):
    assert first_line(error, limit) == expected
