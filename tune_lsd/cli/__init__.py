"""``tune-lsd``: the command line. It parses arguments and calls the library, nothing more.

Each command is a :class:`~tune_lsd.cli.command.Command` (its options, examples and what it
does) in the module of its topic: ``training`` (train, evaluate), ``searching`` (search,
finalize, prune, sync), ``results`` (ls, report, export), ``comparing`` (compare),
``serving`` (embed, retrieve), ``services`` (ui, server, cluster), ``data`` (cache). The
options of settings that a search or a comparison saves come from their pydantic models
(:mod:`~tune_lsd.cli.options`), so a new setting is one field.

An expected failure (:class:`tune_lsd.errors.TuneLsdError`) is one line and exit status 2;
anything else is a bug: its traceback, a line saying so, and exit status 1.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
import threading
import traceback
import warnings

from tune_lsd.cli.command import Command
from tune_lsd.cli.comparing import Compare
from tune_lsd.cli.data import Cache
from tune_lsd.cli.results import Export, List, Report
from tune_lsd.cli.searching import Finalize, Prune, Search, Sync
from tune_lsd.cli.services import UI, Cluster, Server
from tune_lsd.cli.serving import Embed, Retrieve
from tune_lsd.cli.training import Evaluate, Train
from tune_lsd.errors import TuneLsdError

COMMANDS: list[type[Command]] = [
    Train,
    Search,
    Export,
    UI,
    Report,
    Prune,
    Sync,
    Finalize,
    List,
    Server,
    Cluster,
    Compare,
    Cache,
    Evaluate,
    Embed,
    Retrieve,
]
USER_ERROR, BUG, INTERRUPTED = 2, 1, 130
BUG_REPORT = (
    "this is a bug in tune_lsd or a library it uses, not a problem with your input: please report it "
    "with the traceback above and the command you ran (docs/troubleshooting.md, 'Reporting a bug')"
)

__all__ = ["COMMANDS", "Command", "build_parser", "main", "run"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command. ``only``: add the options of that command alone, or of
    none with ``""`` (the options of `search` and `compare` come from settings whose import
    loads Ray, 3-5 s that `tune-lsd cache ls` or `tune-lsd --help` need not wait for)."""
    parser = argparse.ArgumentParser(
        prog="tune-lsd", description="Tune deep metric learning with Listwise Self-Distillation."
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command_class in COMMANDS:
        command = command_class()
        subparser = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if only is None or only == command.name:
            command.add_arguments(subparser)
        subparser.set_defaults(handler=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``tune-lsd`` command (``argv``: its arguments, default ``sys.argv[1:]``); the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    chosen = next((argument for argument in argv if not argument.startswith("-")), "")  # only --debug comes before
    args = build_parser(only=chosen).parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress lines instead
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # tune_lsd retries (an outage: minutes otherwise)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")
    if args.debug:
        return args.handler(args)
    warnings.simplefilter("default")
    for noisy in (DeprecationWarning, FutureWarning):  # libraries' deprecations are not the user's business
        warnings.simplefilter("ignore", noisy)
    warnings.formatwarning = lambda message, category, *rest: f"warning: {message}\n"
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return INTERRUPTED
    except TuneLsdError as error:  # one line; --debug shows the traceback
        print(f"error: {error}", file=sys.stderr)
        return USER_ERROR
    except Exception as error:
        traceback.print_exc()
        print(f"error: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        print(BUG_REPORT, file=sys.stderr)
        return BUG


def run() -> None:
    """The ``tune-lsd`` command: :func:`main`, then a quick exit.

    After a command has finished, Python's teardown of torch's, Ray's and MLflow's modules
    takes 0.8-2.5 s on 2 cores. When nothing but daemon threads is left (which a normal exit
    would not wait for either), the atexit handlers (logging, MLflow's, temporary folders) run,
    the output is flushed and the process ends without that teardown.
    """
    code = main()
    if all(thread.daemon for thread in threading.enumerate() if thread is not threading.main_thread()):
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
