"""The config reference (docs/config.md), generated from the schema in config.py.

    python -m tune_lsd.config_reference > docs/config.md     # or: make docs

A test compares docs/config.md with this output, so the reference cannot go stale.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from tune_lsd.config import Config

INTRO = """# Config reference

Generated from `tune_lsd/config.py` by `make docs` (`python -m tune_lsd.config_reference`);
a test fails when this file and the schema disagree.

A config is one YAML file with the sections below (every key optional, defaults shown).
Override any key on the command line with `--set section.key=value`, or in a search space
under `fixed:` / `params:`. A mistyped key fails with one line that names it.
"""


def render() -> str:
    """The whole reference as Markdown."""
    parts = [INTRO]
    for name, field in Config.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            parts.append(_section(name, section))
    parts.append(
        "## seed\n\n`seed` (int, default `0`): seeds model initialisation, sampling, augmentation and "
        "label noise (the class split has its own `data.split_seed`).\n"
    )
    return "\n".join(parts)


def _section(name: str, model: type[BaseModel]) -> str:
    doc = (model.__doc__ or "").strip()
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key, field in model.model_fields.items():
        rows.append(
            f"| `{name}.{key}` | {_type(field.annotation)}{_bounds(field)} | {_default(field)} | "
            f"{(field.description or '').replace('|', '/')} |"
        )
    return f"## {name}\n\n" + (f"{doc}\n\n" if doc else "") + "\n".join(rows) + "\n"


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(_type(a) for a in options) + ", or null"
    if origin is not None:
        return str(annotation).replace("typing.", "")
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    symbols = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    found = [
        f"{symbols[attr]} {getattr(item, attr)}"
        for item in field.metadata
        for attr in symbols
        if getattr(item, attr, None) is not None
    ]
    return f" ({', '.join(found)})" if found else ""


def _default(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    return "null" if value is None else f"`{value}`"


if __name__ == "__main__":
    print(render(), end="")
