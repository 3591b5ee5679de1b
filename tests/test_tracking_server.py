"""tune_lsd/tracking.py over HTTP: `tune-lsd server` (SQLite and PostgreSQL), concurrent trials,
a server outage mid-search. Servers are started by the tests and ended by pid."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from searching import TINY, free_port, kill_tree, start_tune_lsd, tune_lsd
from tune_lsd.tracking import STATE_TAG

pytestmark = pytest.mark.slow


def start_server(folder: Path, port: int, *extra: str):
    server = start_tune_lsd("server", "--port", str(port), "--runs-dir", str(folder / "server"), *extra,
                            cwd=folder, log=folder / f"server-{time.time_ns()}.log")
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                return server
        except OSError:
            time.sleep(0.5)
    kill_tree(server)
    raise AssertionError("tracking server did not come up")


def trials(uri: str, name: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_every_epoch_logged(client: MlflowClient, runs: list, epochs: int) -> None:
    for run in runs:
        for key in ("val/recall_at_1", "train/loss", "lsd/weight"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), (run.info.run_name, key, steps)


def test_four_concurrent_trials_log_every_point_to_one_server(tmp_path):
    port = free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        result = tune_lsd("search", "--space", "lsd", "--name", "four", "--scheduler", "fifo", "--num-samples", "4",
                          "--max-concurrent", "4", "--cpus-per-trial", "0.5", "--tracking-uri", uri,
                          "--set", "schedule.epochs=3", *TINY, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        client, runs = trials(uri, "four")
        assert len(runs) == 4
        intervals = sorted((r.info.start_time, r.info.end_time) for r in runs)
        assert intervals[3][0] < intervals[0][1]  # all four ran at the same time
        assert_every_epoch_logged(client, runs, 3)
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/model.pt"]  # uploaded through the server
        assert list((tmp_path / "server" / "server-artifacts").rglob("model.pt"))
    finally:
        kill_tree(server)


def test_server_outage_mid_search_loses_no_metric(tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    search = start_tune_lsd("search", "--space", "lsd", "--name", "outage", "--scheduler", "fifo", "--num-samples", "2",
                            "--tracking-uri", uri, "--set", "schedule.epochs=8", *TINY, cwd=tmp_path,
                            log=tmp_path / "search.log")
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until metrics are flowing
            time.sleep(1)
            try:
                client, runs = trials(uri, "outage")
                if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 1:
                    break
            except Exception:
                continue
        kill_tree(server)  # the server goes away mid-search ...
        time.sleep(6)
        server = start_server(tmp_path, port)  # ... and comes back on the same store
        assert search.wait(timeout=400) == 0, (tmp_path / "search.log").read_text()[-3000:]
        client, runs = trials(uri, "outage")
        assert len(runs) == 2 and {r.data.tags[STATE_TAG] for r in runs} == {"completed"}
        assert_every_epoch_logged(client, runs, 8)
    finally:
        kill_tree(search)
        kill_tree(server)


def postgres_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


@pytest.mark.skipif(postgres_bin() is None, reason="Debian's postgresql is not installed")
def test_postgresql_backed_server_records_a_search(tmp_path):
    bindir = postgres_bin()
    # PostgreSQL refuses to run as root: as root, run it as the package's postgres user, in a
    # folder of its own under /tmp (pytest's tmp_path is not readable by other users).
    data = Path(tempfile.mkdtemp(prefix="tune-lsd-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    pg_port = free_port()
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"],
                   check=True, capture_output=True, timeout=120)
    postgres = subprocess.Popen([*as_postgres, str(bindir / "postgres"), "-D", str(data), "-p", str(pg_port),
                                 "-k", str(data), "-c", "listen_addresses=127.0.0.1"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    server = None
    try:
        for _ in range(60):
            ready = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg_port)], capture_output=True)
            if ready.returncode == 0:
                break
            time.sleep(0.5)
        subprocess.run([str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "mlflow"],
                       check=True, capture_output=True, timeout=60)
        port = free_port()
        server = start_server(tmp_path, port, "--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{pg_port}/mlflow")
        uri = f"http://127.0.0.1:{port}"
        result = tune_lsd("search", "--space", "baseline", "--name", "pg", "--searcher", "random", "--scheduler", "fifo",
                          "--num-samples", "2", "--tracking-uri", uri, "--set", "schedule.epochs=2", *TINY, cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        client, runs = trials(uri, "pg")
        assert len(runs) == 2
        assert_every_epoch_logged(client, runs, 2)
        rows = subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "-tAc",
                               "select count(*) from runs"], capture_output=True, text=True, check=True).stdout
        assert int(rows.strip()) == 3  # the parent and two trials, in PostgreSQL
    finally:
        if server is not None:
            kill_tree(server)
        kill_tree(postgres)
        shutil.rmtree(data, ignore_errors=True)


def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path):
    result = tune_lsd("search", "--space", "lsd", "--name", "nowhere", "--tracking-uri", f"http://127.0.0.1:{free_port()}",
                      *TINY, cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is unreachable" in lines[0] and "tune-lsd server" in lines[0]
    assert not (tmp_path / "runs" / "ray").exists()
