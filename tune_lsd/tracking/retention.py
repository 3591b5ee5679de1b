"""Which trial models MLflow keeps: those of the search's best trials (``--keep-models N``).

Every trial uploads its best epoch's model (``checkpoint/model.pt``) when it ends, ~19 MB for
the demo's model, gigabytes at hundreds of trials. A search keeps the models of its ``N`` best
trials by ``best/<metric>``; the other ended trials lose theirs (their metrics, params and
config stay), and their runs are tagged so that a reader knows why.

A trial's model is deleted only once it is in MLflow and the trial, its value read again just
before, still ranks after the ``N``-th best: the trial's last metrics travel in front of its
model through the same spool, and the ``N``-th best only gets better as trials end, so a trial
that could still enter the best ``N`` never loses its model.
"""

from __future__ import annotations

from collections.abc import Callable

from mlflow.entities import RunInfo
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from tune_lsd.tracking.names import CHECKPOINT_DIR, MODEL_TAG, SEARCH_TAG, STATE_TAG, mlflow_key
from tune_lsd.tracking.store import TrackingContext, retry

ENDED_STATES = ("completed", "stopped early", "errored")


def models_beyond_best(runs: list, metric: str, mode: str, keep: int) -> tuple[list, list]:
    """(the ended trial runs ranked after the best ``keep`` by ``best/<metric>`` whose models were
    not deleted yet, the ranking's ``keep`` best). Ties keep the order of ``runs`` (MLflow's),
    as :func:`~tune_lsd.tracking.queries.best_trial_run` does: equal values are common on small
    validation sets, and a tie must not keep every model."""
    key = mlflow_key(f"best/{metric}")
    ended = [r for r in runs if r.data.tags.get(STATE_TAG) in ENDED_STATES and key in r.data.metrics]
    ranked = sorted(ended, key=lambda r: r.data.metrics[key], reverse=mode == "max")  # (stable)
    return [r for r in ranked[keep:] if r.data.tags.get(MODEL_TAG) != "deleted"], ranked[:keep]


def keep_best_models(
    context: TrackingContext, metric: str, mode: str, keep: int, every_run: bool = True
) -> tuple[int, int]:
    """Delete the models of the search's ended trials beyond its best ``keep``; returns
    (models deleted, bytes freed). Trials whose model has not reached MLflow yet are left for
    the next call. ``every_run=False`` reads only the runs tagged as holding a model (the best
    ``keep``, and those that arrived since the last call: a few, whatever the trials run so
    far), ranking among them; a trial deleted once ranks after the best for good."""
    client = MlflowClient(context.tracking_uri)
    query = f"tags.`{SEARCH_TAG}` = 'trial'" + ("" if every_run else f" and tags.`{MODEL_TAG}` = 'uploaded'")
    runs = retry(
        lambda: client.search_runs([context.experiment_id], filter_string=query, max_results=50_000),
        "search_runs",
    )
    beyond, best = models_beyond_best(runs, metric, mode, keep)
    if not beyond:
        return 0, 0
    key = mlflow_key(f"best/{metric}")
    last_kept = best[-1]
    order = {run.info.run_id: index for index, run in enumerate(runs)}

    def still_beyond(run_id: str, value: float) -> bool:
        """After its last epochs arrived: ranked after the last kept run (ties by MLflow's order)."""
        threshold = last_kept.data.metrics[key]
        if value != threshold:
            return value < threshold if mode == "max" else value > threshold
        return order[run_id] > order[last_kept.info.run_id]

    sizes = [_delete_model(client, context.tracking_uri, run.info, key, still_beyond) for run in beyond]
    return sum(size is not None for size in sizes), sum(size or 0 for size in sizes)


def _delete_model(
    client: MlflowClient, tracking_uri: str, info: RunInfo, key: str, still_beyond: Callable[[str, float], bool]
) -> int | None:
    """Delete the model of the run ``info`` if it is in MLflow and the run, read again, is still
    beyond the best; returns the bytes freed, or None when nothing was deleted."""
    run_id = info.run_id
    files = retry(lambda: client.list_artifacts(run_id, CHECKPOINT_DIR), "list_artifacts")
    if not files:
        return None  # not uploaded yet (or never: the trial logged no epoch)
    if not still_beyond(run_id, retry(lambda: client.get_run(run_id), "get_run").data.metrics[key]):
        return None  # its last epochs arrived with the model: it belongs to the best now
    repository = get_artifact_repository(info.artifact_uri, tracking_uri=tracking_uri)
    retry(lambda: repository.delete_artifacts(CHECKPOINT_DIR), "delete_artifacts")
    retry(lambda: client.set_tag(run_id, MODEL_TAG, "deleted"), "set_tag")
    return sum(f.file_size or 0 for f in files)
