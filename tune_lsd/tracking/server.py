"""``tune-lsd server``: the MLflow tracking server command and its basic-auth set-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from tune_lsd.storage import Location, resolve_uri
from tune_lsd.tracking.store import CREDENTIALS_HELP, TrackingError, client_credentials


def server_command(
    backend_store_uri: str, artifacts_destination: str | Path, host: str, port: int, auth: bool = False
) -> list[str]:
    """``mlflow server`` with one worker (2 processes, ~0.5 GB instead of 17 and 2.75 GB) that
    proxies artifacts, so trials on every node upload through it over HTTP; ``auth``: MLflow's
    basic-auth app (see :func:`auth_server_environment`)."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(artifacts_destination),
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        *(["--app-name", "basic-auth"] if auth else []),
    ]


def artifact_store(destination: str) -> tuple[str, dict[str, str]]:
    """Where the server keeps artifacts, as ``mlflow server --artifacts-destination`` takes it, and
    the environment it needs there. A local folder is made absolute; an object store is checked
    (one line when it cannot be written) and its endpoint, given as for ``--storage`` (the URI's
    ``endpoint_override``, or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL), goes to MLflow's boto3 as
    MLFLOW_S3_ENDPOINT_URL. The server proxies artifacts: trials and the UI need no S3 credentials."""
    location = Location(destination)
    if not location.is_remote:
        return str(location.local_path), {}
    location.check_writable()
    parts = urlsplit(resolve_uri(destination))
    query = dict(parse_qsl(parts.query))
    environment = {}
    if parts.scheme == "s3" and "endpoint_override" in query:
        environment["MLFLOW_S3_ENDPOINT_URL"] = f"{query.get('scheme', 'https')}://{query['endpoint_override']}"
    return urlunsplit(parts._replace(query="")), environment


def auth_server_environment(folder: Path) -> dict[str, str]:
    """Environment for ``mlflow server --app-name basic-auth``: its config and user database in
    ``folder``, and as its admin the user whose credentials the clients send (so the team's
    trials and commands log with the same environment). MLflow creates the admin on the first
    start only; later password changes go through MLflow's update-password API."""
    username, password = client_credentials()
    if not username or not password:
        raise TrackingError(f"--auth needs the admin's credentials: {CREDENTIALS_HELP}")
    owner_only(folder)
    (folder / "users.db").touch(
        mode=0o600
    )  # MLflow's users and password hashes (SQLite: an empty file is a valid database)
    config = folder / "basic_auth.ini"
    config.touch(mode=0o600)
    config.write_text(
        "[mlflow]\n"
        "default_permission = READ\n"  # what a signed-in user may do in others' experiments
        f"database_uri = sqlite:///{(folder / 'users.db').resolve()}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    return {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_USERNAME": username,
        "MLFLOW_AUTH_ADMIN_PASSWORD": password,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or _secret_key(folder),
    }


def owner_only(folder: Path) -> None:
    """Make ``folder`` (created if missing) and the files in it readable by their owner only:
    MLflow creates its user database with the process's umask (0644, in a 0755 folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    for path in folder.iterdir():
        path.chmod(0o700 if path.is_dir() else 0o600)


def _secret_key(folder: Path) -> str:
    """The key the auth app signs its CSRF tokens with: made once, kept (owner-only) across restarts."""
    import secrets

    path = folder / "secret_key"
    if not path.is_file():
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()
