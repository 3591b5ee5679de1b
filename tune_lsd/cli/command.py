"""The shape of one ``tune-lsd`` command: its options and what it does, side by side."""

from __future__ import annotations

import argparse
from typing import ClassVar


class Command:
    """One sub-command. A subclass names itself, says in one line what it does (``help``),
    shows examples (``epilog``), adds its options and runs.

    ``run`` returns the exit status; an expected failure is raised as a
    :class:`tune_lsd.errors.TuneLsdError`, which :func:`tune_lsd.cli.main` prints as one line.
    """

    name: ClassVar[str]
    help: ClassVar[str]
    epilog: ClassVar[str] = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add this command's options to its parser."""

    def run(self, args: argparse.Namespace) -> int:
        """Do the work; return the exit status."""
        raise NotImplementedError
