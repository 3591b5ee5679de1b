"""Helpers for tests that run real searches through the `tune-lsd` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tune_lsd.cluster import descendants

# Under a second per trial epoch on one core: 40 glyph classes, 3 batches of 64 per epoch, and
# timm's 0.4 M-parameter test ResNet (a 6 MB checkpoint where the demo's resnet10t writes 80 MB).
TINY = [
    "--set",
    "model.backbone=test_resnet",
    "--set",
    "data.max_classes=40",
    "--set",
    "data.max_test_classes=40",
    "--set",
    "data.batch_size=64",
    "--set",
    "schedule.steps_per_epoch=3",
]


def _command(args: tuple[str, ...], env: dict[str, str] | None) -> tuple[list[str], dict[str, str]]:
    """`tune-lsd ARGS` in this Python, with a private local Ray and unbuffered output (``env``: added)."""
    return [sys.executable, "-m", "tune_lsd.cli", *args], {
        **os.environ,
        "RAY_AUTH_MODE": "disabled",
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }


def tune_lsd(
    *args: str, cwd: Path, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    command, env = _command(args, env)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


def start_tune_lsd(*args: str, cwd: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start in a new session so the test can end the driver and every process it started."""
    command, env = _command(args, env)
    handle = open(log, "w")
    return subprocess.Popen(command, cwd=cwd, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the driver and every process it started (by pid, never by name)."""
    pids = descendants(process.pid)
    for pid in [process.pid, *pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    process.wait(timeout=30)
    deadline = time.time() + 20
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        for pid in pids:  # orphans re-parented elsewhere still have their pid
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)


def wait_until_search_started(log: Path, name: str, timeout_s: float = 180) -> None:
    """Wait for the driver's "search 'NAME': ..." line: its MLflow store exists and is migrated
    by then. Opening a fresh SQLite store earlier races the driver's own schema migration."""
    deadline = time.time() + timeout_s
    while f"search {name!r}:" not in (log.read_text() if log.exists() else ""):
        if time.time() > deadline:
            raise AssertionError(f"search {name!r} did not start within {timeout_s} s: {log.read_text()[-2000:]}")
        time.sleep(1)


def child_runs(runs_dir: Path, name: str):
    """(client, parent runs, child runs) of search ``name`` in the runs folder's MLflow store."""
    from mlflow.tracking import MlflowClient

    from tune_lsd.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri(runs_dir))
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def start_server(folder: Path, port: int, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`tune-lsd server` on 127.0.0.1:PORT with its runs folder in FOLDER/server, once it answers /health."""
    server = start_tune_lsd(
        "server",
        "--port",
        str(port),
        "--runs-dir",
        str(folder / "server"),
        *extra,
        cwd=folder,
        log=folder / f"server-{time.time_ns()}.log",
        env=env,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    kill_tree(server)
    raise AssertionError("tracking server did not come up")


def node_ids(address: str) -> dict[str, str]:
    """{"head": id, "worker": id} from the cluster itself (the head has node:__internal_head__)."""
    script = (
        f"import ray, json; ray.init(address={address!r}, log_to_driver=False); "
        "print(json.dumps({('head' if 'node:__internal_head__' in n['Resources'] else 'worker'): n['NodeID'] "
        "for n in ray.nodes() if n['Alive']}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
