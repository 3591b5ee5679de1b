"""The search this driver process is running, for the objects Ray Tune restores from a pickle.

Ray Tune pickles the searcher and the callbacks when a search starts and, on ``--resume``,
restores them from that pickle, with the paths of the run that pickled them (another working
directory, another machine, a folder deleted since). They read the places of the run in
progress from here instead; :func:`~tune_lsd.search.runner.run_search` declares them around
the Tuner's fit with :func:`running`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from tune_lsd.search.outages import OutageLines
from tune_lsd.storage import Location
from tune_lsd.tracking import TrackingContext


@dataclass(frozen=True)
class RunningSearch:
    """``context``: the search's MLflow run; ``epochs``: per trial (a trial that ran them all
    completed, one with fewer was stopped early); ``finished_dir``: where trials the scheduler
    stopped are recorded as finished (never resumed); ``storage_path``: Ray Tune's storage
    path of this run (the folder or URI that holds the experiment folder); ``outages``: the
    lines said while the storage does not answer."""

    context: TrackingContext
    epochs: int
    finished_dir: Location
    storage_path: str
    outages: OutageLines | None = None


_running: RunningSearch | None = None


@contextmanager
def running(search: RunningSearch) -> Iterator[None]:
    """While the block runs (the Tuner's fit), restored callbacks and searchers use ``search``."""
    global _running
    _running = search
    try:
        yield
    finally:
        _running = None


def running_search() -> RunningSearch:
    if _running is None:
        raise RuntimeError("tune_lsd's Tune callbacks and searchers run only inside tune_lsd.search.running.running()")
    return _running
