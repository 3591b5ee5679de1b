"""The write side: a search's parent run and its trials' child runs, created and ended.

The trials' own records (params, metrics, checkpoints) and the driver's (trial states, the
search's end) reach these functions through spools (:mod:`tune_lsd.tracking.delivery`).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tune_lsd.tracking.names import (
    ERROR_TAG,
    NODES_TAG,
    PARENT_TAG,
    RAY_EXPERIMENT_TAG,
    SAMPLED_TAG,
    SEARCH_TAG,
    STATE_TAG,
    TRIAL_ID_TAG,
    mlflow_key,
    param_value,
)
from tune_lsd.tracking.queries import find_trial_run, parent_run
from tune_lsd.tracking.store import TrackingContext, TrackingError, ensure_experiment, open_store, retry

RUN_GRACE_S = 60.0  # how long a trial state waits for the run of a trial that reported nothing


def start_search_run(
    tracking_uri: str,
    search_name: str,
    params: dict[str, Any],
    artifact_root: Path | None,
    spool_dir: Path | None = None,
    ray_experiment: str = "",
) -> TrackingContext:
    """Create (or, on --resume, reopen) the parent run of search ``search_name``; its records
    are spooled under ``spool_dir`` (default: a folder in the system's temporary folder);
    ``ray_experiment`` names the Ray Tune experiment whose trials log to it."""
    open_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, search_name, artifact_root)
    existing = parent_run(client, experiment_id)
    if existing is not None:
        run_id = existing.info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(experiment_id, run_name=search_name, tags={SEARCH_TAG: "parent", STATE_TAG: "running"})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, param_value(v)) for k, v in params.items()])
    return TrackingContext(tracking_uri, experiment_id, run_id, str(spool_dir) if spool_dir else "", ray_experiment)


def log_search_text(context: TrackingContext, text: str, artifact_file: str) -> None:
    """A text artifact on the search's parent run (e.g. the search space it ran)."""
    client = MlflowClient(context.tracking_uri)
    retry(lambda: client.log_text(context.parent_run_id, text, artifact_file), "log_text")


def log_folder(tracking_uri: str, run_id: str, folder: Path, artifact_path: str) -> None:
    """Upload every file of ``folder`` as artifacts of run ``run_id`` under ``artifact_path``."""
    client = MlflowClient(tracking_uri)
    retry(lambda: client.log_artifacts(run_id, str(folder), artifact_path), "log_artifacts")


def open_trial_run(
    client: MlflowClient, context: TrackingContext, trial_id: str, record: dict[str, Any], run_id: str | None
) -> tuple[str, list[int]]:
    """The trial's run: created with its params and tags, or (a restarted trial) reopened;
    returns its id and the epochs it has already logged (none for a new run). The node is
    recorded with the trial's first epoch there (:func:`record_node`): Ray Tune can set a trial
    up in an actor and hand it to another before it trains."""
    existing = client.get_run(run_id) if run_id else find_trial_run(client, context, trial_id)
    if existing is not None:
        client.update_run(existing.info.run_id, status="RUNNING")
        logged = sorted({int(m.step) for m in client.get_metric_history(existing.info.run_id, "epoch")})
        return existing.info.run_id, logged
    tags = {
        PARENT_TAG: context.parent_run_id,
        TRIAL_ID_TAG: trial_id,
        SEARCH_TAG: "trial",
        STATE_TAG: "running",
        SAMPLED_TAG: record["sampled"],
    }
    if context.ray_experiment:
        tags[RAY_EXPERIMENT_TAG] = context.ray_experiment
    run = client.create_run(context.experiment_id, run_name=record["trial_name"], tags=tags)
    params = [Param(k, v) for k, v in record["params"].items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start : start + 100])
    return run.info.run_id, []


def end_trial_run(client: MlflowClient, context: TrackingContext, record: dict[str, Any], final: bool = True) -> None:
    """Set a trial's final state (and error) on its run.

    The trial's run appears when the trial's own spool delivers it: while the search runs
    (``final`` False) a missing run is a failure to retry later, for a trial that reported
    results (``has_run``) until it appears, for one that did not (it may have died before
    opening one) for RUN_GRACE_S. Once every trial's spool is delivered (``final``), a
    missing run is skipped."""
    run = find_trial_run(client, context, record["trial_id"])
    if run is None:
        if not final and (record["has_run"] or time.time() - record.get("time", 0) < RUN_GRACE_S):
            raise TrackingError(f"the run of trial {record['trial_id']} is not recorded yet")
        return
    tags = [RunTag(STATE_TAG, record["state"])]
    if record["reason"]:
        tags.append(RunTag(ERROR_TAG, record["reason"][:5000]))
    client.log_batch(run.info.run_id, tags=tags)
    # A trial the scheduler stopped early finished normally (the MLflow UI draws KILLED as a failure).
    status = {"completed": "FINISHED", "stopped early": "FINISHED", "errored": "FAILED"}[record["state"]]
    client.set_terminated(run.info.run_id, status=status)


def record_node(client: MlflowClient, run_id: str, node_id: str) -> None:
    """Add ``node_id`` to the run's ``tune_lsd.nodes`` (every node the trial trained on, in order)."""
    nodes = [n for n in client.get_run(run_id).data.tags.get(NODES_TAG, "").split(",") if n] + [node_id]
    client.set_tag(run_id, NODES_TAG, ",".join(nodes))


def discard_lost_trial_runs(context: TrackingContext, known_trial_ids: set[str]) -> list[tuple[str, int]]:
    """Delete the runs of trials that Ray Tune no longer knows: a trial that started (and
    opened its run, perhaps even finished) after the last experiment state Ray Tune saved
    before its driver was killed. Neither Ray nor the searcher know it, so ``--resume`` ran
    another trial in its place. Only runs of this context's Ray experiment are touched (tagged
    ``lost``, KILLED, then deleted: ``mlflow runs restore --run-id ID`` brings one back).
    Returns (trial id, epochs it had logged) of each run deleted."""
    if not context.ray_experiment:
        return []
    client = MlflowClient(context.tracking_uri)
    runs = retry(
        lambda: client.search_runs(
            [context.experiment_id],
            max_results=10_000,
            filter_string=f"tags.`{PARENT_TAG}` = '{context.parent_run_id}' and tags.`{SEARCH_TAG}` = 'trial' and "
            f"tags.`{RAY_EXPERIMENT_TAG}` = '{context.ray_experiment}'",
        ),
        "search_runs",
        attempts=2,
    )
    lost = [run for run in runs if run.data.tags[TRIAL_ID_TAG] not in known_trial_ids]

    def discard(run_id: str) -> None:
        client.set_tag(run_id, STATE_TAG, "lost")
        client.set_terminated(run_id, status="KILLED")
        client.delete_run(run_id)

    for run in lost:
        retry(functools.partial(discard, run.info.run_id), "delete_run", attempts=2)
    return [(run.data.tags[TRIAL_ID_TAG], int(run.data.metrics.get("epoch", 0))) for run in lost]


def end_search_run(client: MlflowClient, context: TrackingContext, record: dict[str, Any]) -> None:
    """The search's end on its parent run: summary metrics, state tag and run status."""
    now = int(time.time() * 1000)
    metrics = [Metric(mlflow_key(k), float(v), now, 0) for k, v in record["summary"].items()]
    client.log_batch(context.parent_run_id, metrics=metrics, tags=[RunTag(STATE_TAG, record["state"])])
    client.set_terminated(
        context.parent_run_id, status="FINISHED" if record["state"].startswith("completed") else "FAILED"
    )


def log_final_run(
    context: TrackingContext, run_name: str, params: dict[str, Any], metrics: dict[str, float], folder: Path
) -> str:
    """The search's final model as a finished run nested in its parent run (tag
    ``tune_lsd.search`` = ``final``): its config as params, its test metrics, the files of
    ``folder`` as artifacts (a model file under ``checkpoint/``, as a trial's). Returns its id."""
    client = MlflowClient(context.tracking_uri)
    run = retry(
        lambda: client.create_run(
            context.experiment_id,
            run_name=run_name,
            tags={PARENT_TAG: context.parent_run_id, SEARCH_TAG: "final", STATE_TAG: "completed"},
        ),
        "create_run",
    )
    run_id = run.info.run_id
    params_list = [Param(k, param_value(v)) for k, v in params.items()]
    now = int(time.time() * 1000)
    points = [Metric(mlflow_key(k), float(v), now, 0) for k, v in metrics.items()]
    for start in range(0, max(len(params_list), len(points)), 100):  # MLflow: at most 100 params per batch
        batch = functools.partial(
            client.log_batch, run_id, params=params_list[start : start + 100], metrics=points[start : start + 100]
        )
        retry(batch, "log_batch")
    retry(lambda: client.log_artifacts(run_id, str(folder)), "log_artifacts")
    client.set_terminated(run_id, status="FINISHED")
    return run_id
