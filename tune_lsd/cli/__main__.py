"""``python -m tune_lsd.cli``: the same as the ``tune-lsd`` command."""

from tune_lsd.cli import run

run()
