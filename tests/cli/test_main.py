"""tune_lsd/cli/__init__.py: an expected failure is one line and status 2; anything else is a
bug, shown with its traceback, a line that says so, and status 1."""

from __future__ import annotations

import argparse

import pytest

from tune_lsd import cli
from tune_lsd.cli.command import Command
from tune_lsd.errors import TuneLsdError


class Failing(Command):
    """A command that fails the way --kind says (run through main(), as tune-lsd runs it)."""

    name = "fail"
    help = "fail"

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--kind", choices=["expected", "bug"])

    def run(self, args: argparse.Namespace) -> int:
        if args.kind == "expected":
            raise TuneLsdError("the data root does not exist: /nowhere")
        return len([]) // 0  # a genuine bug: ZeroDivisionError


@pytest.fixture
def with_failing_command(monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", [*cli.COMMANDS, Failing])


def test_an_expected_failure_is_one_line_and_status_2(with_failing_command, capsys):
    assert cli.main(["fail", "--kind", "expected"]) == 2
    assert capsys.readouterr().err.splitlines() == ["error: the data root does not exist: /nowhere"]


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(with_failing_command, capsys):
    assert cli.main(["fail", "--kind", "bug"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("Traceback (most recent call last):") and "ZeroDivisionError" in err
    assert err.splitlines()[-2] == "error: ZeroDivisionError: integer division or modulo by zero"
    assert err.splitlines()[-1] == cli.BUG_REPORT and "Reporting a bug" in cli.BUG_REPORT


def test_every_command_has_a_help_line_and_a_unique_name():
    names = [command.name for command in cli.COMMANDS]
    assert len(names) == len(set(names))
    assert all(command.help for command in cli.COMMANDS)
