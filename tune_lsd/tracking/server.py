"""``tune-lsd server``: the MLflow tracking server command and its basic-auth set-up."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tune_lsd.tracking.store import CREDENTIALS_HELP, TrackingError, client_credentials


def server_command(backend_store_uri: str, artifacts_destination: Path, host: str, port: int,
                   auth: bool = False) -> list[str]:
    """``mlflow server`` with one worker (2 processes, ~0.5 GB instead of 17 and 2.75 GB) that
    proxies artifacts, so trials on every node upload through it over HTTP; ``auth``: MLflow's
    basic-auth app (see :func:`auth_server_environment`)."""
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts_destination), "--serve-artifacts",
            "--host", host, "--port", str(port), "--workers", "1", *(["--app-name", "basic-auth"] if auth else [])]


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
