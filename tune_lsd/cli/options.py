"""Command-line options made from the settings models: one pydantic field, one option.

A field's type gives the option's type and choices (a ``Literal``), its default the option's
default, its description the help. ``json_schema_extra`` may name a ``flag`` (``--set`` for
``overrides``; a boolean whose default is true gets ``--no-...``) and a ``metavar``. So a new
setting is one field, and the command line, its help and its errors follow.
"""

from __future__ import annotations

import argparse
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from tune_lsd.config import ConfigError


def _hints(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def option_flag(model: type[BaseModel], field: str) -> str:
    """The option that sets ``field`` of ``model``: ``--num-samples`` for ``num_samples``, or
    the field's own ``flag``."""
    info = model.model_fields[field]
    flag = _hints(info).get("flag")
    if flag:
        return str(flag)
    prefix = "--no-" if info.annotation is bool and info.default is True else "--"
    return prefix + field.replace("_", "-")


def _value_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """(the type an option's text is converted to, its choices) of a field's annotation."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(arg for arg in typing.get_args(annotation) if arg is not type(None))
    if typing.get_origin(annotation) is Literal:
        choices = list(typing.get_args(annotation))
        return type(choices[0]), choices
    return annotation, None


def _default_text(default: Any, separator: str | None) -> str:
    if default is None or default == [] or isinstance(default, bool):
        return ""
    return f" (default: {separator.join(default) if separator else default})"


def _list_of(separator: str) -> Callable[[str], list[str]]:
    """The option's text split at ``separator``: ``lsd,baseline`` -> ``["lsd", "baseline"]``."""

    def parse(text: str) -> list[str]:
        return [item.strip() for item in text.split(separator)]

    return parse


def add_model_options(
    parser: argparse.ArgumentParser,
    model: type[BaseModel],
    fields: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
) -> None:
    """Add an option for each of ``fields`` of ``model`` (default: all of them but ``exclude``)."""
    skipped = set(exclude)
    for field in fields if fields is not None else model.model_fields:
        if field in skipped:
            continue
        info = model.model_fields[field]
        flag, hints = option_flag(model, field), _hints(info)
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        help_text = ((info.description or "") + _default_text(default, hints.get("separator"))).replace(
            "%", "%%"
        )  # argparse formats help
        if info.annotation is bool:
            action = "store_false" if default is True else "store_true"
            parser.add_argument(flag, dest=field, action=action, help=help_text)
            continue
        if typing.get_origin(info.annotation) is list:
            if hints.get("separator"):
                separator = str(hints["separator"])
                parser.add_argument(
                    flag,
                    dest=field,
                    default=default,
                    metavar=hints.get("metavar"),
                    help=help_text,
                    type=_list_of(separator),
                )
            else:
                parser.add_argument(
                    flag,
                    dest=field,
                    action="append",
                    default=default,
                    metavar=hints.get("metavar"),
                    help=help_text + " (repeatable)",
                )
            continue
        value_type, choices = _value_type(info.annotation)
        parser.add_argument(
            flag,
            dest=field,
            type=value_type,
            choices=choices,
            default=default,
            metavar=hints.get("metavar"),
            help=help_text,
        )


def model_from_args(model: type[BaseModel], args: argparse.Namespace, **values: Any) -> Any:
    """``model`` built from the options :func:`add_model_options` added (``values`` win); a
    validation error becomes one line naming the option."""
    given = {field: getattr(args, field) for field in model.model_fields if hasattr(args, field)}
    try:
        return model(**{**given, **values})
    except ValidationError as error:
        first = error.errors()[0]
        field = str(first["loc"][0])
        message = first["msg"][0].lower() + first["msg"][1:]
        if first["type"] == "string_pattern_mismatch":  # the field's description says what is allowed
            message = model.model_fields[field].description or message
        raise ConfigError(f"{option_flag(model, field)} {first['input']!r}: {message}") from None
