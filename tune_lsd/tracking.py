"""MLflow tracking of searches: one experiment per search name, a parent run per search, a
nested child run per trial, each trial's best checkpoint as an artifact, the search's best
model in the model registry.

All MLflow calls of tune_lsd live here and go through ``MlflowClient`` (no global "active
run" state, so concurrent trials in one process cannot mix their runs up).

What trials (and the search driver, for trial states) record goes through a spool
(:mod:`tune_lsd.spool`): written to disk under the search's folder, delivered by a background
thread with retries, so a tracking server that is down never slows an epoch and loses nothing.
What a server that stayed down did not receive is delivered later by :func:`deliver_spools`
(``tune-lsd sync NAME``, and ``--resume``).

MLflow metric names may not contain ``@``: ``val/recall@1`` is logged as ``val/recall_at_1``
(see :func:`mlflow_key`).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from tune_lsd.errors import first_line
from tune_lsd.spool import Spool, SpoolWriter, spools_under

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
                raise TrackingError(f"MLflow {what} failed after {attempts} tries: {first_line(error, 200)}") from None
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
    _check_credentials(tracking_uri, timeout_s)


def _check_credentials(tracking_uri: str, timeout_s: float) -> None:
    """One line when a server with authentication refuses this process's credentials."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1")
    username, password = client_credentials()
    if username and password:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        urllib.request.urlopen(request, timeout=timeout_s)
    except urllib.error.HTTPError as error:
        if error.code in (401, 403):
            refused = "refused the credentials of user " + repr(username) if username else "needs credentials"
            raise TrackingError(f"MLflow tracking server {tracking_uri} {refused} (HTTP {error.code}): "
                                f"{CREDENTIALS_HELP}") from None
    except OSError:
        pass  # /health answered: let the real request report anything else


def prefer_own_retries() -> None:
    """Turn off MLflow's own HTTP retries in this process (up to ~4 minutes per request with a
    server down) unless the user set them: tune_lsd retries (:func:`retry`, the spools)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to log into its search's parent run (picklable, sent to workers).
    ``spool_dir``: the folder of the search's spools (one sub-folder per trial)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    spool_dir: str = ""

    def spool_folder(self, name: str) -> Path:
        root = Path(self.spool_dir) if self.spool_dir else Path(tempfile.gettempdir()) / "tune_lsd-spool" / self.parent_run_id
        return root / name


# --- driver side -----------------------------------------------------------------------------


def open_store(tracking_uri: str) -> None:
    """Create (or just open) the store at ``tracking_uri``. A new SQLite store is created under
    an exclusive lock on a file next to it: processes opening it at the same time would race
    MLflow's schema migration (alembic) and leave a store none of them can use."""
    if not tracking_uri.startswith("sqlite:///"):
        return
    import fcntl

    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        retry(lambda: MlflowClient(tracking_uri).search_experiments(max_results=1), "open the store")


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
    tracking_uri: str, search_name: str, params: dict[str, Any], artifact_root: Path | None,
    spool_dir: Path | None = None,
) -> TrackingContext:
    """Create (or, on --resume, reopen) the parent run of search ``search_name``; its records
    are spooled under ``spool_dir`` (default: a folder in the system's temporary folder)."""
    open_store(tracking_uri)
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
    return TrackingContext(tracking_uri, experiment_id, run_id, str(spool_dir) if spool_dir else "")


def log_search_text(context: TrackingContext, text: str, artifact_file: str) -> None:
    """A text artifact on the search's parent run (e.g. the search space it ran)."""
    client = MlflowClient(context.tracking_uri)
    retry(lambda: client.log_text(context.parent_run_id, text, artifact_file), "log_text")


def _deliver_finish(client: MlflowClient, context: TrackingContext, record: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(mlflow_key(k), float(v), now, 0) for k, v in record["summary"].items()]
    client.log_batch(context.parent_run_id, metrics=metrics, tags=[RunTag(STATE_TAG, record["state"])])
    client.set_terminated(context.parent_run_id, status="FINISHED" if record["state"].startswith("completed") else "FAILED")


RUN_GRACE_S = 60.0  # how long a trial state waits for the run of a trial that reported nothing


def _deliver_trial_state(client: MlflowClient, context: TrackingContext, record: dict[str, Any],
                         final: bool = True) -> None:
    """The trial's run appears when the trial's own spool delivers it: while the search runs
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
        tags.append(RunTag("tune_lsd.error", record["reason"][:5000]))
    client.log_batch(run.info.run_id, tags=tags)
    # A trial the scheduler stopped early finished normally (the MLflow UI draws KILLED as a failure).
    status = {"completed": "FINISHED", "stopped early": "FINISHED", "errored": "FAILED"}[record["state"]]
    client.set_terminated(run.info.run_id, status=status)


def find_trial_run(client: MlflowClient, context: TrackingContext, trial_id: str):
    """The child run of trial ``trial_id``, or None (one request: the caller retries)."""
    runs = client.search_runs(
        [context.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{context.parent_run_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
        max_results=1)
    return runs[0] if runs else None


def trial_runs(tracking_uri: str, experiment_name: str) -> list:
    """All child (trial) runs of the search ``experiment_name``."""
    client = MlflowClient(tracking_uri)
    experiment = retry(lambda: client.get_experiment_by_name(experiment_name), "get_experiment_by_name")
    if experiment is None:
        raise TrackingError(f"no search named {experiment_name!r} in {tracking_uri}")
    return retry(lambda: client.search_runs([experiment.experiment_id], filter_string=f"tags.`{SEARCH_TAG}` = 'trial'",
                                            max_results=10_000), "search_runs")


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
        raise TrackingError(f"cannot load model {model_uri}: {first_line(error)}") from None
    if MODEL_METADATA_KEY not in (model.metadata.metadata or {}):
        raise TrackingError(f"{model_uri} is an MLflow model but not a tune_lsd embedding model")
    return model


def server_command(backend_store_uri: str, artifacts_destination: Path, host: str, port: int,
                   auth: bool = False) -> list[str]:
    """``mlflow server`` with one worker (2 processes, ~0.5 GB instead of 17 and 2.75 GB) that
    proxies artifacts, so trials on every node upload through it over HTTP; ``auth``: MLflow's
    basic-auth app (see :func:`auth_server_environment`)."""
    import sys

    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts_destination), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1", *(["--app-name", "basic-auth"] if auth else [])]


CREDENTIALS_HELP = ("set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or write them to ~/.mlflow/credentials "
                    "([mlflow] mlflow_tracking_username = ... / mlflow_tracking_password = ...)")


def client_credentials() -> tuple[str | None, str | None]:
    """The credentials MLflow's clients send: the environment first, then ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    credentials = read_mlflow_creds()
    return credentials.username, credentials.password


def auth_server_environment(folder: Path) -> dict[str, str]:
    """Environment for ``mlflow server --app-name basic-auth``: its config and user database in
    ``folder``, and as its admin the user whose credentials the clients send (so the team's
    trials and commands log with the same environment). MLflow creates the admin on the first
    start only; later password changes go through MLflow's update-password API."""
    username, password = client_credentials()
    if not username or not password:
        raise TrackingError(f"--auth needs the admin's credentials: {CREDENTIALS_HELP}")
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "basic_auth.ini"
    config.write_text("[mlflow]\n"
                      "default_permission = READ\n"  # what a signed-in user may do in others' experiments
                      f"database_uri = sqlite:///{(folder / 'users.db').resolve()}\n"
                      "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
    return {"MLFLOW_AUTH_CONFIG_PATH": str(config), "MLFLOW_AUTH_ADMIN_USERNAME": username,
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or _secret_key(folder)}


def _secret_key(folder: Path) -> str:
    """The key the auth app signs its CSRF tokens with: made once, kept (owner-only) across restarts."""
    import secrets

    path = folder / "secret_key"
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


# --- spooled records: trials and the search driver ---------------------------------------------

SEARCH_SPOOL = "_search"  # the driver's spool (trial states, the search's end), delivered after the trials'
CLOSE_TIMEOUT_S = 300.0  # the longest a trial's end waits for its records to reach a server that answers


class TrialTracker:
    """The child run of one trial: params once, metrics every epoch, best checkpoint at the end.

    Every call returns at once: records go to the trial's spool and a background thread
    delivers them. :meth:`close` at the trial's end waits for them (see :class:`SpoolWriter`).
    """

    def __init__(self, context: TrackingContext, trial_id: str, trial_name: str, flat_config: dict[str, Any],
                 sampled: dict[str, Any], node_id: str) -> None:
        """Open (or, for a restarted trial, reopen) the trial's run; ``node_id`` is recorded in
        the tag ``tune_lsd.nodes`` (every node the trial (re)started on, in order)."""
        self.trial_id = trial_id
        spool = Spool(context.spool_folder(trial_id), initial_state={"context": asdict(context), "trial_id": trial_id})
        self.writer = SpoolWriter(spool, functools.partial(deliver_records, files=spool.files))
        self.writer.append({"op": "open", "trial_name": trial_name, "node_id": node_id,
                            "params": {k: _param_value(v) for k, v in flat_config.items()},
                            "sampled": json.dumps(sampled, sort_keys=True)})

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id, once the run was created (see :meth:`flush`)."""
        return self.writer.spool.state.get("run_id")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {mlflow_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.writer.append({"op": "metrics", "step": step, "timestamp": int(time.time() * 1000), "values": values})

    def log_text(self, text: str, artifact_file: str) -> None:
        self.writer.append({"op": "text", "text": text, "artifact_file": artifact_file})

    def log_checkpoint(self, write: Callable[[Path], None]) -> None:
        """``write(folder)`` fills a folder, which becomes the run's checkpoint artifact."""
        name = f"upload-{self.writer.spool.appended}"
        write(_fresh_folder(self.writer.spool.files / name))
        self.writer.append({"op": "upload", "folder": name, "artifact_path": CHECKPOINT_DIR})

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Wait for the records so far to be delivered; returns how many are not (server down)."""
        return self.writer.flush(timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Deliver what is left and stop; returns the records kept on disk for ``tune-lsd sync``."""
        return self.writer.close(timeout_s)


class SearchRecorder:
    """The driver's records: each trial's final state, then the search's end (spooled too)."""

    def __init__(self, context: TrackingContext) -> None:
        self.context = context
        self.final = False  # set by close(): the trials' spools were delivered before it
        spool = Spool(context.spool_folder(SEARCH_SPOOL), initial_state={"context": asdict(context)})
        self.writer = SpoolWriter(spool, lambda records, state: deliver_records(records, state, spool.files, self.final))

    def trial_ended(self, trial_id: str, state: str, reason: str | None = None, has_run: bool = True) -> None:
        """``state``: completed | stopped early | errored. ``has_run``: the trial reported results."""
        self.writer.append({"op": "trial_state", "trial_id": trial_id, "state": state, "reason": reason,
                            "has_run": has_run, "time": time.time()})

    def search_ended(self, state: str, summary: dict[str, float] | None = None) -> None:
        self.writer.append({"op": "finish", "state": state, "summary": summary or {}})

    def close(self, timeout_s: float = 60.0) -> int:
        """Deliver what is left (call it after the trials' spools were delivered)."""
        self.final = True
        return self.writer.close(timeout_s)

    @property
    def closed(self) -> bool:
        return self.writer.closed


_recorders: dict[str, SearchRecorder] = {}


def search_recorder(context: TrackingContext) -> SearchRecorder:
    """This process's recorder of the search ``context`` (opened on first use, again after a
    close). Callbacks find it here: Ray Tune pickles them, and a thread cannot be pickled."""
    recorder = _recorders.get(context.parent_run_id)
    if recorder is None or recorder.closed:
        recorder = _recorders[context.parent_run_id] = SearchRecorder(context)
    return recorder


def deliver_records(records: list[dict[str, Any]], state: dict[str, Any], files: Path, final: bool = True) -> None:
    """Send spooled records (all of one ``op``) to MLflow; the spool calls this. ``state`` holds
    the search's context and, once created, the trial's run id. Raises on any failure."""
    context = TrackingContext(**state["context"])
    client = MlflowClient(context.tracking_uri)
    op = records[0]["op"]
    if op == "open":
        state["run_id"] = _open_trial_run(client, context, state["trial_id"], records[0], state.get("run_id"))
    elif op == "metrics":
        points = [Metric(k, v, r["timestamp"], r["step"]) for r in records for k, v in r["values"].items()]
        for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per request
            client.log_batch(state["run_id"], metrics=points[start:start + 1000])
    elif op == "text":
        client.log_text(state["run_id"], records[0]["text"], records[0]["artifact_file"])
    elif op == "upload":
        folder = files / records[0]["folder"]
        if folder.is_dir():  # gone: delivered before a crash kept the spool from counting it
            client.log_artifacts(state["run_id"], str(folder), records[0]["artifact_path"])
            shutil.rmtree(folder)
    elif op == "trial_state":
        _deliver_trial_state(client, context, records[0], final=final)
    elif op == "finish":
        _deliver_finish(client, context, records[0])
    else:
        raise ValueError(f"unknown spool record {op!r}")


def _open_trial_run(client: MlflowClient, context: TrackingContext, trial_id: str, record: dict[str, Any],
                    run_id: str | None) -> str:
    """The trial's run: created with its params and tags, or (a restarted trial) reopened."""
    existing = client.get_run(run_id) if run_id else find_trial_run(client, context, trial_id)
    if existing is not None:
        nodes = [n for n in existing.data.tags.get(NODES_TAG, "").split(",") if n] + [record["node_id"]]
        client.update_run(existing.info.run_id, status="RUNNING")
        client.set_tag(existing.info.run_id, NODES_TAG, ",".join(nodes))
        return existing.info.run_id
    tags = {PARENT_TAG: context.parent_run_id, TRIAL_ID_TAG: trial_id, SEARCH_TAG: "trial", STATE_TAG: "running",
            SAMPLED_TAG: record["sampled"], NODES_TAG: record["node_id"]}
    run = client.create_run(context.experiment_id, run_name=record["trial_name"], tags=tags)
    params = [Param(k, v) for k, v in record["params"].items()]
    for start in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
        client.log_batch(run.info.run_id, params=params[start:start + 100])
    return run.info.run_id


def _fresh_folder(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def deliver_spools(spool_dir: Path, log=print, skip: list[str] = ()) -> int:
    """Deliver every spooled record under ``spool_dir`` (the trials' spools, then the driver's;
    none named in ``skip``), deleting each spool once delivered; returns how many records were
    delivered. Raises TrackingError (one line) when the server does not take them; what was
    delivered stays delivered."""
    spools = sorted((s for s in spools_under(spool_dir) if s.folder.name not in skip),
                    key=lambda s: s.folder.name == SEARCH_SPOOL)
    delivered = 0
    checked: set[str] = set()  # (every spool of a search names the same server: ask it once)
    for spool in spools:
        context = TrackingContext(**spool.state["context"])
        if context.tracking_uri not in checked:
            check_tracking_uri(context.tracking_uri, timeout_s=5)
            checked.add(context.tracking_uri)
        try:
            count = spool.deliver_pending(functools.partial(deliver_records, files=spool.files))
        except Exception as error:
            raise TrackingError(f"delivering {spool.folder} to {context.tracking_uri} failed: "
                                f"{first_line(error, 200)}") from None
        spool.remove()
        delivered += count
        if count:
            log(f"delivered {count} spooled records of {spool.folder.name} to {context.tracking_uri}")
    remove_if_empty(spool_dir)
    return delivered


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def spooled_records(spool_dir: Path) -> tuple[int, int]:
    """(records not yet delivered, spools holding them) under ``spool_dir``."""
    counts = [len(spool.pending(limit=10**9)) for spool in spools_under(spool_dir)]
    return sum(counts), sum(1 for c in counts if c)


def _param_value(value: Any) -> str:
    return str(value)[:6000]
