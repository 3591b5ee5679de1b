"""``tune-lsd search --extend NAME --num-samples M``: M more trials for a completed search.

The new trials belong to the same search: the same MLflow experiment and parent run, the
same settings (space, searcher, scheduler, overrides), the best trial and the champion chosen
among all trials. The searcher starts from every result the earlier trials measured (their
sampled values and best validation result, read from MLflow), so TPE or the GP models them at
once instead of sampling its start-up trials again, and no earlier trial is run again.

Each round keeps its own Ray experiment (``ray/NAME.ext-N``, N = trials before it), so an
extension killed half-way continues with ``--resume NAME`` like any search.
"""

from __future__ import annotations

import json
from typing import Any

from tune_lsd import tracking
from tune_lsd.search.lifecycle import completion_record
from tune_lsd.search.runner import run_search
from tune_lsd.search.settings import SearchError, SearchSettings, load_settings


def extend_search(
    name: str, more: int, runs_dir: str = "runs", storage: str | None = None, log=print
) -> dict[str, Any]:
    """Run ``more`` trials of the completed search ``name``, its searcher informed by the earlier ones."""
    settings = load_settings(name, runs_dir, storage)
    if completion_record(settings) is None:
        raise SearchError(f"search {name!r} has not completed: finish it with --resume {name} before --extend")
    if settings.scheduler == "pbt":
        raise SearchError(f"search {name!r} is a PBT search (one evolving population): start a new search instead")
    earlier, ran = earlier_results(settings)
    extended = settings.model_copy(update={"num_samples": more, "earlier_trials": ran})
    settings.completion_location.delete()  # --resume now continues the extension
    log(
        f"search {name!r}: {more} more trials; the {settings.searcher} searcher starts from the results of its "
        f"{len(earlier)} earlier trials" + (f" ({ran - len(earlier)} without a result)" if ran > len(earlier) else "")
    )
    return run_search(extended, log=log, earlier=earlier)


def earlier_results(settings: SearchSettings) -> tuple[list[tuple[dict[str, Any], float]], int]:
    """(sampled values, best result) of every earlier trial that has one, and how many trials ran."""
    key = tracking.mlflow_key(f"best/{settings.metric}")
    runs = tracking.trial_runs(settings.resolved_tracking_uri(), settings.name)
    results = [
        (json.loads(run.data.tags.get(tracking.SAMPLED_TAG, "{}")), run.data.metrics[key])
        for run in runs
        if key in run.data.metrics
    ]
    return results, len(runs)
