"""tune_lsd/config_reference.py: docs/config.md is what the schema generates, and complete."""

from __future__ import annotations

from pathlib import Path

from tune_lsd.config import allowed_keys
from tune_lsd.config_reference import render

DOCS = Path(__file__).parent.parent / "docs" / "config.md"


def test_committed_reference_matches_the_schema():
    assert DOCS.read_text() == render(), "docs/config.md is stale: run `make docs`"


def test_every_key_is_documented_with_a_meaning():
    rows = {
        line.split("|")[1].strip(" `"): line.split("|")[4].strip()
        for line in render().splitlines()
        if line.startswith("| `")
    }
    assert set(rows) == set(allowed_keys()) - {"seed"}
    assert not [key for key, meaning in rows.items() if not meaning]
