"""A comparison in MLflow (``tune-lsd compare``): one experiment named after it, a parent run
(the settings, the paired differences and their intervals, the page), and one nested run per
retrain (its space, search, seeds and test metrics). The searches stay experiments of their
own; the parent run's tag ``tune_lsd.searches`` names them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tune_lsd.tracking.names import (
    PARENT_TAG,
    SEARCH_TAG,
    STATE_TAG,
    mlflow_key,
    param_value,
)
from tune_lsd.tracking.queries import parent_run
from tune_lsd.tracking.store import (
    TrackingContext,
    ensure_experiment,
    open_store,
    retry,
)

COMPARISON_TAG_VALUE = "comparison"  # SEARCH_TAG of a comparison's parent run
RETRAIN_TAG_VALUE = "retrain"  # SEARCH_TAG of its retrain runs
SEARCHES_TAG = "tune_lsd.searches"


def start_comparison_run(
    tracking_uri: str, name: str, params: dict[str, Any], artifact_root: Path | None, searches: list[str]
) -> TrackingContext:
    """Create (or, on --resume, reopen) the comparison's parent run."""
    open_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, name, artifact_root)
    existing = parent_run(client, experiment_id, COMPARISON_TAG_VALUE)
    if existing is not None:
        run_id = existing.info.run_id
        retry(lambda: client.update_run(run_id, status="RUNNING"), "update_run")
    else:
        run = retry(
            lambda: client.create_run(
                experiment_id,
                run_name=name,
                tags={SEARCH_TAG: COMPARISON_TAG_VALUE, STATE_TAG: "running", SEARCHES_TAG: ",".join(searches)},
            ),
            "create_run",
        )
        run_id = run.info.run_id
        retry(
            lambda: client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()]), "log_batch"
        )
    return TrackingContext(tracking_uri, experiment_id, run_id)


def log_retrain_run(context: TrackingContext, run_name: str, tags: dict[str, str], metrics: dict[str, float]) -> str:
    """One retrain of a search's winner, nested in the comparison's run; returns its id."""
    client = MlflowClient(context.tracking_uri)
    run = retry(
        lambda: client.create_run(
            context.experiment_id,
            run_name=run_name,
            tags={PARENT_TAG: context.parent_run_id, SEARCH_TAG: RETRAIN_TAG_VALUE, STATE_TAG: "completed", **tags},
        ),
        "create_run",
    )
    now = int(time.time() * 1000)
    retry(
        lambda: client.log_batch(
            run.info.run_id, metrics=[Metric(mlflow_key(k), float(v), now, 0) for k, v in metrics.items()]
        ),
        "log_batch",
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def end_comparison_run(
    context: TrackingContext, metrics: dict[str, float], tags: dict[str, str], folder: Path | None
) -> None:
    """The comparison's results on its parent run: metrics, tags (the verdict), the page's files."""
    client = MlflowClient(context.tracking_uri)
    now = int(time.time() * 1000)
    retry(
        lambda: client.log_batch(
            context.parent_run_id,
            metrics=[Metric(mlflow_key(k), float(v), now, 0) for k, v in metrics.items()],
            tags=[RunTag(k, v) for k, v in {**tags, STATE_TAG: "completed"}.items()],
        ),
        "log_batch",
    )
    if folder is not None:
        retry(lambda: client.log_artifacts(context.parent_run_id, str(folder), "compare"), "log_artifacts")
    client.set_terminated(context.parent_run_id, status="FINISHED")
