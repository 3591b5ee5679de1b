"""The read side: a search's parent run, its trial runs, the best trial, curves and files."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient

from tune_lsd.tracking.names import CHECKPOINT_DIR, MODEL_FILE, PARENT_TAG, SEARCH_TAG, TRIAL_ID_TAG, mlflow_key
from tune_lsd.tracking.store import TrackingContext, TrackingError, retry


def trial_runs(tracking_uri: str, experiment_name: str) -> list:
    """All child (trial) runs of the search ``experiment_name``."""
    client = MlflowClient(tracking_uri)
    experiment = retry(lambda: client.get_experiment_by_name(experiment_name), "get_experiment_by_name")
    if experiment is None:
        raise TrackingError(f"no search named {experiment_name!r} in {tracking_uri}")
    return retry(
        lambda: client.search_runs(
            [experiment.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = 'trial'", max_results=10_000
        ),
        "search_runs",
    )


def find_trial_run(client: MlflowClient, context: TrackingContext, trial_id: str):
    """The child run of trial ``trial_id``, or None (one request: the caller retries)."""
    runs = client.search_runs(
        [context.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{context.parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
        max_results=1,
    )
    return runs[0] if runs else None


def best_trial_run(tracking_uri: str, experiment_name: str, metric: str, mode: str = "max"):
    """The child run with the best ``best/<metric>``."""
    key = mlflow_key(f"best/{metric}")
    runs = [r for r in trial_runs(tracking_uri, experiment_name) if key in r.data.metrics]
    if not runs:
        raise TrackingError(f"search {experiment_name!r} has no trial with a {metric} result yet")
    pick = max if mode == "max" else min
    return pick(runs, key=lambda r: r.data.metrics[key])


def metric_history(tracking_uri: str, run_id: str, metric: str) -> list[tuple[int, float, int]]:
    """Every logged point of ``metric`` in run ``run_id`` as (step, value, timestamp ms), by step."""
    client = MlflowClient(tracking_uri)
    points = retry(lambda: client.get_metric_history(run_id, mlflow_key(metric)), "get_metric_history")
    return sorted((p.step, p.value, p.timestamp) for p in points)


def parent_run(client: MlflowClient, experiment_id: str, kind: str = "parent"):
    """The search's parent run (or, ``kind="comparison"``, a comparison's) in experiment
    ``experiment_id``, or None."""
    runs = retry(
        lambda: client.search_runs([experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = '{kind}'", max_results=1),
        "search_runs",
    )
    return runs[0] if runs else None


def search_parent_run(tracking_uri: str, experiment_name: str):
    """The parent run of the search ``experiment_name`` (TrackingError if there is none)."""
    client = MlflowClient(tracking_uri)
    experiment = retry(lambda: client.get_experiment_by_name(experiment_name), "get_experiment_by_name")
    parent = None if experiment is None else parent_run(client, experiment.experiment_id)
    if parent is None:
        raise TrackingError(f"no search named {experiment_name!r} in {tracking_uri}")
    return parent


def search_context(tracking_uri: str, experiment_name: str) -> TrackingContext:
    """The context of the search ``experiment_name`` (its parent run), to record into it."""
    parent = search_parent_run(tracking_uri, experiment_name)
    return TrackingContext(tracking_uri, parent.info.experiment_id, parent.info.run_id)


def search_parent_runs(tracking_uri: str) -> list:
    """The parent run of every search in the store, newest first."""
    client = MlflowClient(tracking_uri)
    experiments = retry(lambda: client.search_experiments(max_results=10_000), "search_experiments")
    ids = [e.experiment_id for e in experiments]
    if not ids:
        return []
    return retry(
        lambda: client.search_runs(
            ids,
            filter_string=f"tags.`{SEARCH_TAG}` = 'parent'",
            max_results=10_000,
            order_by=["attributes.start_time DESC"],
        ),
        "search_runs",
    )


def download_trial_file(tracking_uri: str, run_id: str, artifact_path: str, destination: Path) -> Path:
    """One artifact of run ``run_id``, downloaded into ``destination``."""
    return Path(MlflowClient(tracking_uri).download_artifacts(run_id, artifact_path, str(destination)))


def download_trial_model(tracking_uri: str, run_id: str, destination: Path) -> Path:
    """A trial's best model file (``checkpoint/model.pt``), downloaded into ``destination``."""
    return download_trial_file(tracking_uri, run_id, f"{CHECKPOINT_DIR}/{MODEL_FILE}", destination)
