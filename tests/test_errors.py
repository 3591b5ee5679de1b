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


def test_every_error_class_of_the_project_is_a_tune_lsd_error():
    """So that the command line prints each as one line (anything else is reported as a bug)."""
    import importlib
    import inspect
    from pathlib import Path

    from tune_lsd.errors import TuneLsdError

    root = Path(__file__).resolve().parents[1]
    errors = []
    for package in ("tune_lsd", "trainables", "search_spaces"):
        for path in sorted((root / package).rglob("*.py")):
            if path.name == "__main__.py":
                continue
            module = importlib.import_module(
                ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
            )
            errors += [
                cls
                for _, cls in inspect.getmembers(module, inspect.isclass)
                if issubclass(cls, Exception) and cls.__module__ == module.__name__
            ]
    assert len(errors) >= 16
    assert [cls.__qualname__ for cls in errors if not issubclass(cls, TuneLsdError)] == []
