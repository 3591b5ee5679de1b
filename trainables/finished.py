"""A finished trial's final result, left in the search's storage before Ray hears of it, so
that a trial Ray restores as running after a driver crash reports it instead of training again."""

from __future__ import annotations

import json
from typing import Any

from tune_lsd.storage import Location

REPLAYED = "replayed"  # in a result: the trial had finished before a driver crash; nothing was trained


def record_finished(folder: Location | None, trial_id: str, result: dict[str, Any]) -> None:
    """Leave a finished trial's final result in ``folder`` (local, NFS or object storage), whole,
    before Ray hears of it.

    Ray Tune saves its trial states after processing a result: a driver killed in between
    would restore the trial as running and train its last epochs again. The trial finds this
    file when it is restored and reports the result instead (see :func:`finished_result`).
    The driver records trials the scheduler stopped early the same way.
    """
    if folder is None:
        return
    values = {k: v for k, v in result.items() if isinstance(v, (int, float, str, bool))}
    (folder / f"{trial_id}.json").write_text(json.dumps(values))


def finished_result(folder: Location | None, trial_id: str) -> dict[str, Any] | None:
    """The final result a trial recorded with :func:`record_finished`, or None."""
    if folder is None or not (folder / f"{trial_id}.json").exists():
        return None
    return json.loads((folder / f"{trial_id}.json").read_text())
