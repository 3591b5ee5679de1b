"""MLflow tracking of searches: one experiment per search name, a parent run per search, a
nested child run per trial, each trial's best checkpoint as an artifact, the search's best
model in the model registry.

All MLflow calls of tune_lsd live here and go through ``MlflowClient`` (no global "active
run" state, so concurrent trials in one process cannot mix their runs up). Metrics are
sent with ``log_batch`` (one request per epoch) and retried, so a tracking server that is
briefly unreachable loses nothing.

MLflow metric names may not contain ``@``: ``val/recall@1`` is logged as ``val/recall_at_1``
(see :func:`mlflow_key`).
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

SEARCH_TAG = "tune_lsd.search"
TRIAL_ID_TAG = "ray.trial_id"
SAMPLED_TAG = "tune_lsd.sampled"  # JSON of the values the searcher chose for this trial
STATE_TAG = "tune_lsd.state"  # completed | stopped early | errored | running (trials); running | completed | ... (parent)
NODES_TAG = "tune_lsd.nodes"  # Ray node ids the trial ran on, in order (more than one after a restart)
PARENT_TAG = "mlflow.parentRunId"
CHECKPOINT_DIR = "checkpoint"  # a trial's best model file (MODEL_FILE) as a run artifact
MODEL_FILE = "model.pt"
SPACE_ARTIFACT = "search_space.yaml"  # the search space, on the parent run
T = TypeVar("T")


class TrackingError(RuntimeError):
    """The tracking store could not be reached or used (message is one line)."""


def mlflow_key(name: str) -> str:
    """MLflow-safe metric name: ``val/recall@1`` -> ``val/recall_at_1``."""
    return name.replace("@", "_at_")


def default_tracking_uri(runs_dir: Path) -> str:
    """The embedded store: a SQLite file in the runs folder."""
    return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


def retry(action: Callable[[], T], what: str, attempts: int = 6, first_wait_s: float = 0.5) -> T:
    """Run ``action``; on failure wait (0.5, 1, 2, 4, 8 s) and try again; then one clear error."""
    wait = first_wait_s
    for attempt in range(attempts):
        try:
            return action()
        except Exception as error:  # MLflow raises many types for an unreachable server
            if attempt == attempts - 1:
                raise TrackingError(f"MLflow {what} failed after {attempts} tries: {str(error).splitlines()[0][:200]}") from None
            time.sleep(wait)
            wait *= 2
    raise AssertionError("unreachable")


TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def check_tracking_uri(tracking_uri: str, timeout_s: float = 10) -> None:
    """Fail fast (one line) on a tracking URI with an unknown scheme, or an HTTP tracking
    server that does not answer its /health."""
    scheme = tracking_uri.split("://", 1)[0].split("+", 1)[0] if "://" in tracking_uri else None
    if scheme is not None and scheme not in TRACKING_SCHEMES:
        raise TrackingError(f"tracking URI {tracking_uri!r} has an unknown scheme {scheme!r}: use http(s)://HOST:PORT, "
                            "sqlite:///FILE.db or postgresql://...")
    if scheme not in ("http", "https"):
        return
    import urllib.request

    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
    except OSError as error:
        raise TrackingError(f"MLflow tracking server {tracking_uri} is unreachable ({error}); "
                            "start one with `tune-lsd server` or fix --tracking-uri") from None


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to log into its search's parent run (picklable, sent to workers)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


# --- driver side -----------------------------------------------------------------------------


def ensure_experiment(client: MlflowClient, name: str, artifact_root: Path | None) -> str:
    """The id of experiment ``name``, created (with a local artifact root for SQLite) if missing."""
    experiment = retry(lambda: client.get_experiment_by_name(name), "get_experiment_by_name")
    if experiment is not None:
        return experiment.experiment_id
    location = (artifact_root / name).resolve().as_uri() if artifact_root else None
    try:
        # This kind makes the MLflow 3 UI open the experiment on its training runs, not a GenAI overview.
        return client.create_experiment(name, artifact_location=location,
                                        tags={"mlflow.experimentKind": "custom_model_development"})
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        return client.get_experiment_by_name(name).experiment_id


def start_search_run(
    tracking_uri: str, search_name: str, params: dict[str, Any], artifact_root: Path | None
) -> TrackingContext:
    """Create (or, on --resume, reopen) the parent run of search ``search_name``."""
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, search_name, artifact_root)
    existing = _parent_run(client, experiment_id)
    if existing is not None:
        run_id = existing.info.run_id
        client.update_run(run_id, status="RUNNING")
    else:
        run = client.create_run(experiment_id, run_name=search_name, tags={SEARCH_TAG: "parent", STATE_TAG: "running"})
        run_id = run.info.run_id
        client.log_batch(run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
    return TrackingContext(tracking_uri, experiment_id, run_id)


def log_search_text(context: TrackingContext, text: str, artifact_file: str) -> None:
    """A text artifact on the search's parent run (e.g. the search space it ran)."""
    client = MlflowClient(context.tracking_uri)
    retry(lambda: client.log_text(context.parent_run_id, text, artifact_file), "log_text")


def finish_search_run(context: TrackingContext, state: str, summary: dict[str, float] | None = None) -> None:
    client = MlflowClient(context.tracking_uri)
    if summary:
        now = int(time.time() * 1000)
        client.log_batch(context.parent_run_id, metrics=[Metric(mlflow_key(k), float(v), now, 0) for k, v in summary.items()])
    client.set_tag(context.parent_run_id, STATE_TAG, state)
    client.set_terminated(context.parent_run_id, status="FINISHED" if state.startswith("completed") else "FAILED")


def mark_trial(context: TrackingContext, trial_id: str, state: str, reason: str | None = None) -> None:
    """Record a trial's final state (completed / stopped early / errored) on its child run."""
    client = MlflowClient(context.tracking_uri)
    run = find_trial_run(client, context, trial_id)
    if run is None:
        return
    tags = [RunTag(STATE_TAG, state)]
    if reason:
        tags.append(RunTag("tune_lsd.error", reason[:5000]))
    retry(lambda: client.log_batch(run.info.run_id, tags=tags), "log_batch")
    # A trial the scheduler stopped early finished normally (the MLflow UI draws KILLED as a failure).
    status = {"completed": "FINISHED", "stopped early": "FINISHED", "errored": "FAILED"}[state]
    retry(lambda: client.set_terminated(run.info.run_id, status=status), "set_terminated")


def find_trial_run(client: MlflowClient, context: TrackingContext, trial_id: str):
    runs = retry(lambda: client.search_runs(
        [context.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{context.parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
        max_results=1), "search_runs")
    return runs[0] if runs else None


def trial_runs(tracking_uri: str, experiment_name: str) -> list:
    """All child (trial) runs of the search ``experiment_name``."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        raise TrackingError(f"no search named {experiment_name!r} in {tracking_uri}")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = 'trial'", max_results=10_000)


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


def search_parent_runs(tracking_uri: str) -> list:
    """The parent run of every search in the store, newest first."""
    client = MlflowClient(tracking_uri)
    experiments = retry(lambda: client.search_experiments(max_results=10_000), "search_experiments")
    ids = [e.experiment_id for e in experiments]
    if not ids:
        return []
    return retry(lambda: client.search_runs(ids, filter_string=f"tags.`{SEARCH_TAG}` = 'parent'", max_results=10_000,
                                            order_by=["attributes.start_time DESC"]), "search_runs")


def search_parent_run(tracking_uri: str, experiment_name: str):
    """The parent run of the search ``experiment_name`` (TrackingError if there is none)."""
    client = MlflowClient(tracking_uri)
    experiment = retry(lambda: client.get_experiment_by_name(experiment_name), "get_experiment_by_name")
    parent = None if experiment is None else _parent_run(client, experiment.experiment_id)
    if parent is None:
        raise TrackingError(f"no search named {experiment_name!r} in {tracking_uri}")
    return parent


def _parent_run(client: MlflowClient, experiment_id: str):
    """The search's parent run in experiment ``experiment_id``, or None."""
    runs = retry(lambda: client.search_runs(
        [experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = 'parent'", max_results=1), "search_runs")
    return runs[0] if runs else None


def log_folder(tracking_uri: str, run_id: str, folder: Path, artifact_path: str) -> None:
    """Upload every file of ``folder`` as artifacts of run ``run_id`` under ``artifact_path``."""
    client = MlflowClient(tracking_uri)
    retry(lambda: client.log_artifacts(run_id, str(folder), artifact_path), "log_artifacts")


def download_trial_model(tracking_uri: str, run_id: str, destination: Path) -> Path:
    """A trial's best model file (``checkpoint/model.pt``), downloaded into ``destination``."""
    return download_trial_file(tracking_uri, run_id, f"{CHECKPOINT_DIR}/{MODEL_FILE}", destination)


def download_trial_file(tracking_uri: str, run_id: str, artifact_path: str, destination: Path) -> Path:
    return Path(MlflowClient(tracking_uri).download_artifacts(run_id, artifact_path, str(destination)))


MODEL_DIR = "model"  # the logged MLflow model's name on the best trial's run
MODEL_METADATA_KEY = "tune_lsd"  # in a logged model's metadata: marks a tune_lsd embedding model


def log_best_model(context: TrackingContext, run_id: str, model_name: str, files: dict[str, Path],
                   input_example, description: dict[str, Any]) -> int:
    """Log an embedding model (``files`` from :func:`tune_lsd.embedder.write_model_files`) as an
    MLflow pyfunc model of run ``run_id``, register it as ``model_name`` with alias
    ``champion``; returns the registered version.

    The model's code is ``tune_lsd/pyfunc_model.py`` ("models from code"): loading it needs
    torch, numpy and mlflow (pinned in its requirements), not tune_lsd.
    """
    import numpy as np
    import torch
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    from tune_lsd import pyfunc_model

    mlflow.set_tracking_uri(context.tracking_uri)
    mlflow.set_experiment(experiment_id=context.experiment_id)  # the LoggedModel's experiment
    signature = ModelSignature(  # any batch size, height, width and channel count in
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, description["embedding_dim"]))]))
    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={np.__version__}"]
    info = retry(lambda: Model.log(
        artifact_path=None, name=MODEL_DIR, flavor=mlflow.pyfunc, run_id=run_id, python_model=pyfunc_model.__file__,
        artifacts={k: str(v) for k, v in files.items()}, signature=signature, input_example=input_example,
        pip_requirements=requirements, metadata={MODEL_METADATA_KEY: description},
        registered_model_name=model_name), "log_model", attempts=2)
    client = MlflowClient(context.tracking_uri)
    client.set_registered_model_alias(model_name, "champion", info.registered_model_version)
    return int(info.registered_model_version)


def load_embedding_model(model_uri: str, tracking_uri: str | None = None):
    """An MLflow pyfunc model logged by tune_lsd (``models:/NAME@champion``, ``runs:/RUN/model``, ...)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # MLflow raises many types for a URI it cannot resolve
        raise TrackingError(f"cannot load model {model_uri}: {str(error).splitlines()[0][:300]}") from None
    if MODEL_METADATA_KEY not in (model.metadata.metadata or {}):
        raise TrackingError(f"{model_uri} is an MLflow model but not a tune_lsd embedding model")
    return model


def server_command(backend_store_uri: str, artifacts_destination: Path, host: str, port: int) -> list[str]:
    """``mlflow server`` with one worker (2 processes, ~0.5 GB instead of 17 and 2.75 GB) that
    proxies artifacts, so trials on every node upload through it over HTTP."""
    import sys

    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts_destination), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1"]


# --- trial side ------------------------------------------------------------------------------


class TrialTracker:
    """The child run of one trial: params once, metrics every epoch, best checkpoint at the end."""

    def __init__(self, context: TrackingContext, trial_id: str, trial_name: str, flat_config: dict[str, Any],
                 sampled: dict[str, Any], node_id: str) -> None:
        """Open (or, for a restarted trial, reopen) the trial's run; ``node_id`` is recorded in
        the tag ``tune_lsd.nodes`` (every node the trial (re)started on, in order)."""
        self.client = MlflowClient(context.tracking_uri)
        self.context = context
        self.trial_id = trial_id
        existing = find_trial_run(self.client, context, trial_id)
        if existing is not None:  # a restarted or restored trial continues its run
            self.run_id = existing.info.run_id
            nodes = [n for n in existing.data.tags.get(NODES_TAG, "").split(",") if n] + [node_id]
            retry(lambda: self.client.update_run(self.run_id, status="RUNNING"), "update_run")
            retry(lambda: self.client.set_tag(self.run_id, NODES_TAG, ",".join(nodes)), "set_tag")
            return
        tags = {PARENT_TAG: context.parent_run_id, TRIAL_ID_TAG: trial_id, SEARCH_TAG: "trial", STATE_TAG: "running",
                SAMPLED_TAG: json.dumps(sampled, sort_keys=True), NODES_TAG: node_id}
        run = retry(lambda: self.client.create_run(context.experiment_id, run_name=trial_name, tags=tags), "create_run")
        self.run_id = run.info.run_id
        params = [Param(k, _param_value(v)) for k, v in flat_config.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            retry(lambda: self.client.log_batch(self.run_id, params=params[start:start + 100]), "log_batch")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(mlflow_key(k), float(v), now, step) for k, v in metrics.items() if isinstance(v, (int, float))]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch), "log_batch")

    def log_text(self, text: str, artifact_file: str) -> None:
        retry(lambda: self.client.log_text(self.run_id, text, artifact_file), "log_text")

    def log_checkpoint(self, write: Callable[[Path], None]) -> None:
        """``write(folder)`` fills a temporary folder, which becomes the run's checkpoint artifact."""
        with tempfile.TemporaryDirectory() as folder:
            write(Path(folder))
            retry(lambda: self.client.log_artifacts(self.run_id, folder, CHECKPOINT_DIR), "log_artifacts")


def _param_value(value: Any) -> str:
    return str(value)[:6000]
