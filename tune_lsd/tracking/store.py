"""The tracking store: where it is, whether it answers, and opening it.

All MLflow calls of tune_lsd go through ``MlflowClient`` (no global "active run" state, so
concurrent trials in one process cannot mix their runs up), and through :func:`retry` where
a server may be briefly away. A :class:`TrackingContext` names one search's place in a store;
it is what the driver hands to the trials.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import mlflow
from mlflow.tracking import MlflowClient

from tune_lsd.errors import TuneLsdError, first_line

T = TypeVar("T")
TRACKING_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")
CREDENTIALS_HELP = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or write them to ~/.mlflow/credentials "
    "([mlflow] mlflow_tracking_username = ... / mlflow_tracking_password = ...)"
)


class TrackingError(TuneLsdError, RuntimeError):
    """The tracking store could not be reached or used (message is one line)."""


@dataclass(frozen=True)
class TrackingContext:
    """What a trial needs to log into its search's parent run (picklable, sent to workers).
    ``spool_dir``: the folder of the search's spools (one sub-folder per trial);
    ``ray_experiment``: the Ray Tune experiment whose trials log here (tagged on their runs)."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    spool_dir: str = ""
    ray_experiment: str = ""

    def spool_folder(self, name: str) -> Path:
        root = (
            Path(self.spool_dir)
            if self.spool_dir
            else Path(tempfile.gettempdir()) / "tune_lsd-spool" / self.parent_run_id
        )
        return root / name


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


def prefer_own_retries() -> None:
    """Turn off MLflow's own HTTP retries in this process (up to ~4 minutes per request with a
    server down) unless the user set them: tune_lsd retries (:func:`retry`, the spools)."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "60")


def check_tracking_uri(tracking_uri: str, timeout_s: float = 10) -> None:
    """Fail fast (one line) on a tracking URI with an unknown scheme, or an HTTP tracking
    server that does not answer its /health or refuses this process's credentials."""
    scheme = tracking_uri.split("://", 1)[0].split("+", 1)[0] if "://" in tracking_uri else None
    if scheme is not None and scheme not in TRACKING_SCHEMES:
        raise TrackingError(
            f"tracking URI {tracking_uri!r} has an unknown scheme {scheme!r}: use http(s)://HOST:PORT, "
            "sqlite:///FILE.db or postgresql://..."
        )
    if scheme not in ("http", "https"):
        return
    import urllib.request

    try:
        urllib.request.urlopen(f"{tracking_uri.rstrip('/')}/health", timeout=timeout_s)
    except OSError as error:
        raise TrackingError(
            f"MLflow tracking server {tracking_uri} is unreachable ({error}); "
            "start one with `tune-lsd server` or fix --tracking-uri"
        ) from None
    _check_credentials(tracking_uri, timeout_s)


def client_credentials() -> tuple[str | None, str | None]:
    """The credentials MLflow's clients send: the environment first, then ~/.mlflow/credentials."""
    from mlflow.utils.credentials import read_mlflow_creds

    credentials = read_mlflow_creds()
    return credentials.username, credentials.password


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
            raise TrackingError(
                f"MLflow tracking server {tracking_uri} {refused} (HTTP {error.code}): {CREDENTIALS_HELP}"
            ) from None
    except OSError:
        pass  # /health answered: let the real request report anything else


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
        return client.create_experiment(
            name, artifact_location=location, tags={"mlflow.experimentKind": "custom_model_development"}
        )
    except mlflow.exceptions.MlflowException:  # created concurrently by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id
