"""Options that several commands share: the MLflow store they read, and the decode cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from tune_lsd.cli.options import add_model_options
from tune_lsd.config import Config


def add_store_options(parser: argparse.ArgumentParser) -> None:
    """Where an existing MLflow store is: a tracking server, or the SQLite file in a runs folder."""
    from tune_lsd.search.settings import SearchSettings

    add_model_options(parser, SearchSettings, ["tracking_uri", "runs_dir"])


def add_search_location_options(parser: argparse.ArgumentParser) -> None:
    """Where an existing search is: its runs folder and the ``--storage`` it was started with."""
    from tune_lsd.search.settings import SearchSettings

    add_model_options(parser, SearchSettings, ["runs_dir", "storage"])


def tracking_uri(args: argparse.Namespace) -> str:
    """``--tracking-uri``, or the SQLite store in ``--runs-dir``."""
    from tune_lsd.tracking import default_tracking_uri

    return args.tracking_uri or default_tracking_uri(Path(args.runs_dir).resolve())


def existing_store(args: argparse.Namespace) -> str:
    """The tracking URI for commands that only read: a missing SQLite file is an error, not a new store."""
    from tune_lsd.tracking import TrackingError, check_tracking_uri

    uri = tracking_uri(args)
    check_tracking_uri(uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise TrackingError(
            f"no MLflow store at {uri.removeprefix('sqlite:///')}: run a search first, "
            "or point --runs-dir / --tracking-uri at one"
        )
    return uri


def add_set_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--set KEY=VALUE``, repeatable: dotted overrides of a config (``args.set``)."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=f"{help_text} (repeatable)")


def add_no_cache_option(parser: argparse.ArgumentParser) -> None:
    """``--no-cache``: ``data.cache=false`` (help from the config schema)."""
    description = Config.model_fields["data"].annotation.model_fields["cache"].description  # type: ignore[union-attr]
    parser.add_argument(
        "--no-cache", action="store_true", help=f"the same as --set data.cache=false; data.cache: {description}"
    )


def cache_overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides ``--no-cache`` stands for."""
    return ["data.cache=false"] if args.no_cache else []
