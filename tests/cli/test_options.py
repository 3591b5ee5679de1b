"""tune_lsd/cli/options.py: the options of `search` and `compare` are their settings models'
fields, with the models' types, choices, defaults and descriptions."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel

from tune_lsd.cli import build_parser
from tune_lsd.cli.options import option_flag
from tune_lsd.compare.settings import CompareSettings
from tune_lsd.config import ConfigError
from tune_lsd.search.settings import SearchSettings

# command -> (its settings model, the fields a user does not set on the command line)
COMMANDS: dict[str, tuple[type[BaseModel], set[str]]] = {
    "search": (SearchSettings, {"earlier_trials"}),  # written by --extend for its round
    "compare": (CompareSettings, set()),
}


def subparser(command: str):
    parser = build_parser(only=command)
    action = next(a for a in parser._actions if a.dest == "command")  # argparse has no public accessor
    assert isinstance(action.choices, dict)
    return action.choices[command]


def options_by_field(command: str) -> dict:
    return {action.dest: action for action in subparser(command)._actions if action.option_strings}


def other_value(model: type[BaseModel], field: str):
    """A valid value of ``field`` that is not its default."""
    info = model.model_fields[field]
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    annotation = info.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return next(choice for choice in typing.get_args(annotation) if choice != default)
    if annotation is bool:
        return not default
    if field == "spaces":
        return ["lsd", "lsd_pbt"]
    if typing.get_origin(annotation) is list:
        return ["schedule.epochs=3", "lsd.weight=2"]
    base = next((a for a in typing.get_args(annotation) if a is not type(None)), annotation)
    if base is int:
        return (default or 0) + 3
    if base is float:
        return (default or 0.0) + 1.5
    return "name-1" if field == "name" else "x1"


def argv_of(model: type[BaseModel], field: str, value) -> list[str]:
    flag = option_flag(model, field)
    if isinstance(value, bool):
        return [flag]
    if field == "spaces":
        return [flag, ",".join(value)]
    if isinstance(value, list):
        return [part for item in value for part in (flag, item)]
    return [flag, str(value)]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_setting_is_an_option_with_the_models_choices_defaults_and_help(command):
    model, internal = COMMANDS[command]
    options = options_by_field(command)
    missing = set(model.model_fields) - internal - set(options)
    assert not missing, f"settings of {model.__name__} without an option: {missing}"
    for field, info in model.model_fields.items():
        if field in internal:
            continue
        action = options[field]
        assert info.description and action.help.startswith(info.description.replace("%", "%%")), field
        if typing.get_origin(info.annotation) is typing.Literal:
            assert list(action.choices) == list(typing.get_args(info.annotation)), field
        if not info.is_required():
            assert action.default == info.get_default(call_default_factory=True), field


@pytest.mark.parametrize("command", COMMANDS)
def test_no_options_give_the_models_defaults(command):
    model, _ = COMMANDS[command]
    from tune_lsd.cli.options import model_from_args

    args = build_parser(only=command).parse_args([command])
    assert model_from_args(model, args, name="n") == model(name="n")


@pytest.mark.parametrize(
    "command, field",
    [
        (command, field)
        for command, (model, internal) in COMMANDS.items()
        for field in model.model_fields
        if field not in internal
    ],
)
def test_each_option_sets_its_field(command, field):
    from tune_lsd.cli.options import model_from_args

    model, _ = COMMANDS[command]
    value = other_value(model, field)
    args = build_parser(only=command).parse_args([command, *argv_of(model, field, value)])
    settings = model_from_args(model, args, **({} if field == "name" else {"name": "n"}))
    assert getattr(settings, field) == value
    assert settings.model_dump(exclude={field, "name"}) == model(name="n").model_dump(exclude={field, "name"})


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--reduction-factor", "1"], "--reduction-factor 1.0: input should be greater than 1"),
        (["search", "--grace-period", "0"], "--grace-period 0: input should be greater than or equal to 1"),
        (["compare", "--spaces", "lsd"], "--spaces ['lsd']: list should have at least 2 items"),
        (["compare", "--name", "a b"], "--name 'a b': the comparison's name"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_option(argv, message):
    from tune_lsd.cli.options import model_from_args

    model, _ = COMMANDS[argv[0]]
    args = build_parser(only=argv[0]).parse_args(argv)
    with pytest.raises(ConfigError) as caught:
        model_from_args(model, args, **({} if "--name" in argv else {"name": "n"}))
    assert str(caught.value).startswith(message)
