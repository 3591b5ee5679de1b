"""tune_lsd/tracking/ (server, delivery, spool) over HTTP: `tune-lsd server` (SQLite and PostgreSQL, with
and without --auth), concurrent trials, a minute-long outage mid-search, a server that never
comes back (then `tune-lsd sync`). Servers are started by the tests and ended by pid."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from searching import TINY, free_port, kill_tree, start_server, start_tune_lsd, tune_lsd
from trial_runs import logged_trial_run

from tune_lsd import tracking
from tune_lsd.tracking import STATE_TAG

pytestmark = pytest.mark.slow


def trials(uri: str, name: str) -> tuple[MlflowClient, list]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None, f"no MLflow experiment {name!r}"
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags]


def assert_every_epoch_logged(client: MlflowClient, runs: list, epochs: int) -> None:
    for run in runs:
        for key in ("val/recall_at_1", "train/loss", "lsd/weight"):
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            assert steps == list(range(1, epochs + 1)), (run.info.run_name, key, steps)


def wait_for_first_metric(uri: str, name: str, search: subprocess.Popen, log: Path) -> None:
    deadline = time.time() + 240
    while time.time() < deadline:
        assert search.poll() is None, log.read_text()[-3000:]
        time.sleep(1)
        try:
            client, runs = trials(uri, name)
            if runs and len(client.get_metric_history(runs[0].info.run_id, "train/loss")) >= 1:
                return
        except Exception:
            continue
    raise AssertionError("no metric reached the server")


def epoch_results(runs_dir: Path, name: str) -> list[dict]:
    """Every epoch's result as Ray recorded it (time_this_iter_s: the whole step, tracking included)."""
    return [
        json.loads(line)
        for path in (runs_dir / "ray" / name).glob("*/result.json")
        for line in path.read_text().splitlines()
        if line.strip()
    ]


def search_losing_its_server(tmp_path: Path, name: str, num_samples: int, epochs: int, *extra: str):
    """A fifo search logging to a fresh server, which is killed once the search's first metric
    reached it. Returns (port, uri, the search's process)."""
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    search = start_tune_lsd(
        "search",
        "--space",
        "lsd",
        "--name",
        name,
        "--scheduler",
        "fifo",
        "--num-samples",
        str(num_samples),
        "--tracking-uri",
        uri,
        "--set",
        f"schedule.epochs={epochs}",
        *extra,
        *TINY,
        cwd=tmp_path,
        log=tmp_path / "search.log",
    )
    try:
        wait_for_first_metric(uri, name, search, tmp_path / "search.log")
    except BaseException:
        kill_tree(search)
        raise
    finally:
        kill_tree(server)
    return port, uri, search


def test_a_minute_long_server_outage_neither_slows_epochs_nor_loses_a_point(tmp_path):
    epochs = 200  # ~0.4-1 s each with the test backbone: the search outlives the outage
    port, uri, search = search_losing_its_server(tmp_path, "outage", 2, epochs, "--checkpoint-every", "1000")
    down = time.time()  # the server went away mid-search for a minute ...
    server = None
    try:
        time.sleep(60)
        restarting = time.time()
        assert search.poll() is None, "the search ended during the outage: give it more epochs"
        server = start_server(tmp_path, port)  # ... and comes back on the same store
        assert search.wait(timeout=400) == 0, (tmp_path / "search.log").read_text()[-3000:]
        client, runs = trials(uri, "outage")
        assert len(runs) == 2 and {r.data.tags[STATE_TAG] for r in runs} == {"completed"}
        assert_every_epoch_logged(client, runs, epochs)  # 0 points lost
        results = epoch_results(tmp_path / "runs", "outage")
        before = [r["time_this_iter_s"] for r in results if r["time/step_end_unix"] < down]
        during = [r["time_this_iter_s"] for r in results if down + 2 < r["time/step_end_unix"] < restarting]
        print(
            f"epoch time before the outage: median {statistics.median(before):.2f} s, max {max(before):.2f} s "
            f"({len(before)} epochs); during: median {statistics.median(during):.2f} s, max {max(during):.2f} s "
            f"({len(during)} epochs)"
        )
        assert len(during) >= 20  # both trials trained through the outage
        # Loose bounds: the suite's other worker loads the same two cores meanwhile.
        assert statistics.median(during) <= 1.5 * statistics.median(before) + 0.5
        # No epoch waited for the server (before: 6 tries over 15 s, then the trial failed).
        assert max(during) <= 3 * statistics.median(before) + 2
        assert not (tmp_path / "runs" / "searches" / "outage" / "spool").exists()  # all delivered
    finally:
        kill_tree(search)
        if server is not None:
            kill_tree(server)


def test_a_server_that_never_comes_back_ends_the_search_and_sync_delivers_everything(tmp_path):
    epochs = 4
    # gone for the rest of the search
    port, uri, search = search_losing_its_server(tmp_path, "gone", 3, epochs, "--keep-models", "2")
    server = None
    try:
        assert search.wait(timeout=400) == 0, (tmp_path / "search.log").read_text()[-3000:]
        log = (tmp_path / "search.log").read_text()
        assert "search 'gone' completed: 3 trials (0 errored)" in log, log[-3000:]
        assert "Deliver them once it is back with: tune-lsd sync gone" in log, log[-3000:]
        spool = tmp_path / "runs" / "searches" / "gone" / "spool"
        assert sorted(p.name for p in spool.iterdir()) and (spool / "_search").is_dir()

        server = start_server(tmp_path, port)
        synced = tune_lsd("sync", "gone", cwd=tmp_path)
        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert "as models:/gone-best@champion" in synced.stdout, synced.stdout
        client, runs = trials(uri, "gone")
        assert len(runs) == 3 and {r.data.tags[STATE_TAG] for r in runs} == {"completed"}
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert_every_epoch_logged(client, runs, epochs)
        # every trial's best model arrived too, then the one beyond the best 2 (--keep-models) went
        assert "MLflow: deleted the models of 1 trial beyond the best 2" in synced.stdout, synced.stdout
        models = {r.info.run_id: [a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")] for r in runs}
        deleted = [r.info.run_id for r in runs if r.data.tags.get(tracking.MODEL_TAG) == "deleted"]
        assert len(deleted) == 1 and models[deleted[0]] == []
        assert sorted(models.values()) == [[], ["checkpoint/model.pt"], ["checkpoint/model.pt"]]
        parent = client.get_run(runs[0].data.tags["mlflow.parentRunId"])
        assert parent.info.status == "FINISHED" and parent.data.tags[STATE_TAG] == "completed"
        assert client.get_model_version_by_alias("gone-best", "champion").run_id in {r.info.run_id for r in runs}
        assert not spool.exists()
        again = tune_lsd("sync", "gone", cwd=tmp_path)
        assert again.returncode == 0 and "nothing to deliver" in again.stdout, again.stdout + again.stderr
    finally:
        kill_tree(search)
        if server is not None:
            kill_tree(server)


def http_status(url: str, credentials: tuple[str, str] | None = None) -> int:
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(":".join(credentials).encode()).decode())
    try:
        return urllib.request.urlopen(request, timeout=10).status
    except urllib.error.HTTPError as error:
        return error.code


TEAM = {"MLFLOW_TRACKING_USERNAME": "team", "MLFLOW_TRACKING_PASSWORD": "s3cret-Passw0rd"}
NO_CREDENTIALS = {"MLFLOW_TRACKING_USERNAME": "", "MLFLOW_TRACKING_PASSWORD": "", "HOME": "/nonexistent"}


def test_server_with_auth_refuses_anonymous_requests_and_four_trials_log_with_credentials(tmp_path, monkeypatch):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    refused = tune_lsd("server", "--auth", "--port", str(port), cwd=tmp_path, env=NO_CREDENTIALS)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--auth needs the admin's credentials: set MLFLOW_TRACKING_USERNAME" in refused.stderr

    server = start_server(tmp_path, port, "--auth", env=TEAM)
    try:
        search_api = f"{uri}/api/2.0/mlflow/experiments/search?max_results=5"
        assert http_status(search_api) == 401
        assert http_status(search_api, ("team", "wrong")) == 401
        assert http_status(search_api, ("team", TEAM["MLFLOW_TRACKING_PASSWORD"])) == 200
        anonymous = tune_lsd("ls", "--tracking-uri", uri, cwd=tmp_path, env=NO_CREDENTIALS)
        assert anonymous.returncode == 2 and anonymous.stderr.count("\n") == 1, anonymous.stderr
        assert f"MLflow tracking server {uri} needs credentials (HTTP 401)" in anonymous.stderr

        # Four trials at once log every point and upload their checkpoints through the server.
        result = tune_lsd(
            "search",
            "--space",
            "lsd",
            "--name",
            "private",
            "--scheduler",
            "fifo",
            "--num-samples",
            "4",
            "--max-concurrent",
            "4",
            "--cpus-per-trial",
            "0.5",
            "--tracking-uri",
            uri,
            "--set",
            "schedule.epochs=2",
            *TINY,
            cwd=tmp_path,
            env=TEAM,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", TEAM["MLFLOW_TRACKING_USERNAME"])
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", TEAM["MLFLOW_TRACKING_PASSWORD"])
        client, runs = trials(uri, "private")
        assert len(runs) == 4 and {r.data.tags[STATE_TAG] for r in runs} == {"completed"}
        intervals = sorted((r.info.start_time, r.info.end_time) for r in runs)
        assert intervals[3][0] < intervals[0][1]  # all four ran at the same time
        assert_every_epoch_logged(client, runs, 2)
        artifacts = [a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/model.pt"]  # uploaded through the server
        assert list((tmp_path / "server" / "server-artifacts").rglob("model.pt"))
        listed = tune_lsd("ls", "--tracking-uri", uri, cwd=tmp_path, env=TEAM)
        assert listed.returncode == 0 and "private" in listed.stdout, listed.stdout + listed.stderr
        # The users, password hashes and signing key are the owner's only (MLflow made them 0644 in 0755).
        auth = tmp_path / "server" / "server-auth"
        assert {p.name for p in auth.iterdir()} >= {"users.db", "basic_auth.ini", "secret_key"}
        assert (auth.stat().st_mode & 0o777) == 0o700
        assert all((p.stat().st_mode & 0o077) == 0 for p in auth.rglob("*")), {
            p.name: oct(p.stat().st_mode) for p in auth.rglob("*")
        }
    finally:
        kill_tree(server)


def test_server_on_a_public_address_without_auth_warns(tmp_path):
    port = free_port()
    server = start_server(tmp_path, port, "--host", "0.0.0.0")
    try:
        log = next(tmp_path.glob("server-*.log")).read_text()
        assert f"warning: serving on 0.0.0.0 without --auth: anyone who reaches port {port}" in log, log
    finally:
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
    subprocess.run(
        [*as_postgres, str(bindir / "initdb"), "-D", str(data), "-U", "mlflow", "--auth=trust"],
        check=True,
        capture_output=True,
        timeout=120,
    )
    postgres = subprocess.Popen(
        [
            *as_postgres,
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(pg_port),
            "-k",
            str(data),
            "-c",
            "listen_addresses=127.0.0.1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = None
    try:
        for _ in range(60):
            ready = subprocess.run(
                [str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(pg_port)], capture_output=True
            )
            if ready.returncode == 0:
                break
            time.sleep(0.5)
        subprocess.run(
            [str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "mlflow", "mlflow"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        port = free_port()
        server = start_server(tmp_path, port, "--backend-store-uri", f"postgresql://mlflow@127.0.0.1:{pg_port}/mlflow")
        uri = f"http://127.0.0.1:{port}"
        result = tune_lsd(
            "search",
            "--space",
            "baseline",
            "--name",
            "pg",
            "--searcher",
            "random",
            "--scheduler",
            "fifo",
            "--num-samples",
            "2",
            "--tracking-uri",
            uri,
            "--set",
            "schedule.epochs=2",
            *TINY,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
        client, runs = trials(uri, "pg")
        assert len(runs) == 2
        assert_every_epoch_logged(client, runs, 2)
        rows = subprocess.run(
            [
                str(bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg_port),
                "-U",
                "mlflow",
                "-tAc",
                "select count(*) from runs",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert int(rows.strip()) == 3  # the parent and two trials, in PostgreSQL
    finally:
        if server is not None:
            kill_tree(server)
        kill_tree(postgres)
        shutil.rmtree(data, ignore_errors=True)


def test_unreachable_tracking_server_fails_fast_with_one_line(tmp_path):
    result = tune_lsd(
        "search",
        "--space",
        "lsd",
        "--name",
        "nowhere",
        "--tracking-uri",
        f"http://127.0.0.1:{free_port()}",
        *TINY,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is unreachable" in lines[0] and "tune-lsd server" in lines[0]
    assert not (tmp_path / "runs" / "ray").exists()


def test_server_keeps_artifacts_in_object_storage_and_clients_need_no_s3_credentials(tmp_path, object_store):
    """`--artifacts-destination s3://...`: the server (alone) holds the S3 credentials and proxies."""
    port = free_port()
    destination = object_store.uri(f"mlflow-{tmp_path.name}")
    server = start_server(tmp_path, port, "--artifacts-destination", destination, env=object_store.credentials())
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")  # this process has no AWS variables
        assert "AWS_SECRET_ACCESS_KEY" not in os.environ
        experiment = client.create_experiment("proxied")
        run = client.create_run(experiment)
        client.log_text(run.info.run_id, "weights", "checkpoint/model.pt")
        assert client.download_artifacts(run.info.run_id, "checkpoint/model.pt", str(tmp_path)).endswith("model.pt")
        assert not list((tmp_path / "server").rglob("model.pt"))  # not on the server's disk
        # --keep-models deletes through the server too: of two ended trials, the better keeps its model
        context = tracking.start_search_run(client.tracking_uri, "kept", {}, None, spool_dir=tmp_path / "spool")
        for trial_id, best in (("worse", 0.2), ("better", 0.6)):
            logged_trial_run(context, trial_id, 1, "completed", best=best, model_bytes=5000)
        assert tracking.keep_best_models(context, "val/recall@1", "max", keep=1) == (1, 5000)
    finally:
        kill_tree(server)
    import pyarrow.fs

    bucket = pyarrow.fs.S3FileSystem(
        access_key=object_store.access_key,
        secret_key=object_store.secret_key,
        endpoint_override=object_store.endpoint,
        scheme="http",
    )
    stored = [
        info.path
        for info in bucket.get_file_info(
            pyarrow.fs.FileSelector(f"{object_store.bucket}/mlflow-{tmp_path.name}", recursive=True)
        )
        if info.type == pyarrow.fs.FileType.File
    ]
    models = [path for path in stored if path.endswith("/checkpoint/model.pt")]
    assert len(models) == 2, stored  # the proxied run's, and the better trial's (the worse one's deleted)
    sizes = {bucket.get_file_info(path).size for path in models}
    assert sizes == {len(b"weights"), 5000}


def test_server_refuses_an_object_store_it_cannot_write_in_one_line(tmp_path, object_store):
    refused = tune_lsd(
        "server",
        "--port",
        str(free_port()),
        "--artifacts-destination",
        f"s3://missing-bucket/x?endpoint_override={object_store.endpoint}&scheme=http",
        cwd=tmp_path,
        env=object_store.credentials(),
        timeout=60,
    )
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "the bucket does not exist" in refused.stderr
