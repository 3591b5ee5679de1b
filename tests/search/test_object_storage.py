"""A search whose only shared place is object storage (``--storage s3://...``, a real SeaweedFS):
killed, then resumed from another working directory on an empty runs folder, and its secret
nowhere but in the environment."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from searching import (
    TINY,
    free_port,
    kill_tree,
    node_ids,
    start_server,
    start_tune_lsd,
    tune_lsd,
    wait_until_search_started,
)

from tune_lsd.storage import Location
from tune_lsd.tracking import NODES_TAG, STATE_TAG

pytestmark = pytest.mark.slow
FAST = [
    *TINY,
    "--set",
    "model.backbone=test_efficientnet",
    "--set",
    "model.embedding_dim=32",
    "--set",
    "schedule.steps_per_epoch=30",
    "--set",
    "schedule.epochs=3",
]


def bucket_epochs(experiment: Location) -> dict[str, list[int]]:
    """Each trial's trained epochs as the bucket holds them (replayed results are not training)."""
    found = {}
    for trial in experiment.folders():
        if (experiment / trial / "result.json").exists():
            lines = (experiment / trial / "result.json").read_text().splitlines()
            found[trial.split("_")[1]] = [
                json.loads(line)["epoch"] for line in lines if line and not json.loads(line).get("replayed")
            ]
    return found


def test_a_search_on_object_storage_resumes_elsewhere_with_only_its_name_and_storage(
    object_store, tmp_path, monkeypatch
):
    started = time.time()
    storage = object_store.uri(f"searches-{tmp_path.name}")
    for key, value in object_store.credentials().items():  # the driver's (and this test's) environment only
        monkeypatch.setenv(key, value)
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir(), elsewhere.mkdir()
    log = first / "driver.log"
    driver = start_tune_lsd(
        "search",
        "--space",
        "lsd",
        "--name",
        "s3",
        "--num-samples",
        "3",
        "--max-concurrent",
        "1",
        "--scheduler",
        "fifo",
        "--storage",
        storage,
        *FAST,
        cwd=first,
        log=log,
    )
    experiment = Location(storage) / "ray" / "s3"
    try:
        wait_until_search_started(log, "s3")
        deadline = time.time() + 240
        # One trial completed, as the bucket shows (Ray copies its results there with its state,
        # every ~10 s), and a later one an epoch in: kill the driver.
        while True:
            text = log.read_text().split("search 's3':", 1)[1]
            if " completed " in text and " epoch 1/3" in text.split(" completed ", 1)[1]:
                if any(epochs and epochs[-1] == 3 for epochs in bucket_epochs(experiment).values()):
                    break
            assert driver.poll() is None and time.time() < deadline, text[-3000:]
            time.sleep(0.5)
    finally:
        kill_tree(driver)
    at_kill = bucket_epochs(experiment)
    finished = {trial for trial, epochs in at_kill.items() if epochs and epochs[-1] == 3}
    assert finished, at_kill
    assert not (elsewhere / "runs").exists()

    resumed = tune_lsd("search", "--resume", "s3", "--storage", storage, cwd=elsewhere, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "search 's3' completed: 3 trials (0 errored)" in resumed.stdout, resumed.stdout[-3000:]
    after = bucket_epochs(experiment)
    # (a trial that started after the killed driver's last saved state is lost, its folder stays
    # and its MLflow run is deleted with one line: the resumed search ran another in its place)
    kept = {
        trial: epochs
        for trial, epochs in after.items()
        if epochs and f"deleted the run of trial {trial} " not in resumed.stdout
    }
    assert len(kept) == 3 and all(epochs and epochs[-1] == 3 for epochs in kept.values()), (after, resumed.stdout)
    for trial in finished:  # finished before the kill: never trained again
        assert after[trial] == at_kill[trial], (trial, at_kill[trial], after[trial])
    assert (Location(storage) / "searches" / "s3" / "completed.json").exists()
    assert not [name for trial in experiment.folders() for name in (experiment / trial).folders()]  # checkpoints pruned
    for command in (["prune", "s3"], ["sync", "s3"]):  # found again from the storage alone
        done = tune_lsd(*command, "--storage", storage, cwd=elsewhere, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "deleted 0 checkpoints of every trial (the search is complete)"
        in tune_lsd("prune", "s3", "--storage", storage, cwd=elsewhere, timeout=120).stdout
    )
    assert not list((elsewhere / "runs").glob("ray")) and not list((elsewhere / "runs").glob("searches/s3/*.yaml"))

    # The secret is in no output, no file the search wrote, no MLflow store and no object of the bucket.
    secret = object_store.secret_key.encode()
    assert secret not in log.read_bytes() and secret not in (resumed.stdout + resumed.stderr).encode()
    for runs in (first / "runs", elsewhere / "runs"):
        for path in runs.rglob("*"):
            assert not path.is_file() or secret not in path.read_bytes(), path
        for database in runs.glob("*.db"):
            dump = "\n".join(sqlite3.connect(database).iterdump()).encode()
            assert secret not in dump
    logs = ray_logs_since(started)  # both drivers' local Rays
    assert logs and not [p for p in logs if secret in p.read_bytes()]
    bucket = Location(object_store.uri(""))
    import pyarrow.fs

    filesystem, root = bucket._fs()
    objects = [
        info.path
        for info in filesystem.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
        if info.type == pyarrow.fs.FileType.File
    ]
    assert len(objects) > 10
    for path in objects:
        with filesystem.open_input_stream(path) as stream:
            assert secret not in stream.read(), path


def test_a_store_down_for_a_minute_at_the_first_epoch_costs_no_trial(own_object_store, tmp_path, monkeypatch):
    """SeaweedFS SIGKILLed once the first epoch is reported, kept down 60 s and restarted on its
    folder (a store's crash and restart): the trials train on through it (their checkpoints
    wait for it; no --max-failures to spend),
    every trial completes, each epoch is in MLflow once, and --resume from an empty folder finds
    the search complete."""
    from object_store import kill_object_store, restart_object_store
    from searching import child_runs

    storage = own_object_store.uri(f"outage-{tmp_path.name}")
    for key, value in own_object_store.credentials().items():
        monkeypatch.setenv(key, value)
    log = tmp_path / "driver.log"
    # fmt: off
    driver = start_tune_lsd(
        "search", "--space", "lsd", "--name", "outage", "--num-samples", "3", "--max-concurrent", "2",
        "--scheduler", "fifo", "--max-failures", "0", "--storage-patience-s", "300", "--storage", storage, *FAST,
        cwd=tmp_path, log=log,
    )
    # fmt: on
    try:
        wait_until_search_started(log, "outage")
        deadline = time.time() + 240
        while " epoch 1/3" not in log.read_text().split("search 'outage':", 1)[1]:
            assert driver.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        kill_object_store(own_object_store)
        down = time.time()
        time.sleep(60)
        restart_object_store(own_object_store)
        up = time.time()
        driver.wait(timeout=600)
    finally:
        kill_tree(driver)
    text = log.read_text()
    assert driver.returncode == 0, text[-4000:]
    assert "search 'outage' completed: 3 trials (0 errored)" in text, text[-4000:]
    # One line when the store stopped answering and one when it answered again, not Ray's tracebacks:
    assert text.count(" does not answer (") == 1 and "the trials train on" in text, text[-4000:]
    assert text.count(" answers again after ") == 1 and "Last sync command failed" not in text, text[-4000:]
    _, _, children = child_runs(tmp_path / "runs", "outage")
    assert len(children) == 3
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    during_outage = []
    for run in children:
        history = client.get_metric_history(run.info.run_id, "epoch")
        assert sorted(m.step for m in history) == [1, 2, 3]
        assert run.data.tags[STATE_TAG] == "completed"
        during_outage += [m.step for m in history if down + 1 < m.timestamp / 1000 < up]
    assert during_outage, "no trial trained while the store was down"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    resumed = tune_lsd("search", "--resume", "outage", "--storage", storage, cwd=elsewhere, timeout=300)
    assert resumed.returncode == 0 and "nothing to resume" in resumed.stdout, resumed.stdout + resumed.stderr


def test_a_search_through_a_store_that_fails_a_fifth_of_its_requests_completes_exactly(
    object_store, tmp_path, monkeypatch
):
    """Every request to the store goes through a proxy that answers 503 SlowDown to 10 % of them
    and drops the connection of another 10 %, for the whole search: it completes every trial
    with --max-failures 0, each epoch once in MLflow."""
    from faulty_proxy import FaultyProxy
    from searching import child_runs

    proxy = FaultyProxy(object_store.endpoint, rate=0.2, seed=1)
    storage = f"s3://{object_store.bucket}/flaky-{tmp_path.name}?endpoint_override={proxy.endpoint}&scheme=http"
    for key, value in object_store.credentials().items():
        monkeypatch.setenv(key, value)
    try:
        # fmt: off
        result = tune_lsd(
            "search", "--space", "lsd", "--name", "flaky", "--num-samples", "3", "--max-concurrent", "2",
            "--scheduler", "fifo", "--max-failures", "0", "--storage-patience-s", "300", "--storage", storage, *FAST,
            cwd=tmp_path, timeout=600,
        )
        # fmt: on
    finally:
        proxy.stop()
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert "search 'flaky' completed: 3 trials (0 errored)" in result.stdout, output[-4000:]
    counts = proxy.counts
    assert counts.slow_down + counts.dropped >= 20 and counts.forwarded >= 100, counts  # the faults happened
    _, _, children = child_runs(tmp_path / "runs", "flaky")
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    assert len(children) == 3
    for run in children:
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "epoch")) == [1, 2, 3]
        assert run.data.tags[STATE_TAG] == "completed"


def can_hide_folders() -> bool:
    """Root with mount namespaces: a process can get an empty tmpfs over a folder only it sees."""
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True, timeout=30)
    return probe.returncode == 0


@contextmanager
def two_nodes(tmp_path: Path):
    """A head (this machine's view) and a worker node that sees an empty tmpfs over the
    driver's runs folder, with its own HOME and temporary folder and no S3 or MLflow
    credentials of its own. Yields (address, the worker's node id, the worker's process)."""
    import os
    import subprocess

    from tune_lsd.cluster import cluster_down, cluster_up, end_process_tree, node_command

    runs, worker_home = tmp_path / "runs", tmp_path / "worker-home"
    runs.mkdir(exist_ok=True)
    (worker_home / "tmp").mkdir(parents=True)
    address = cluster_up(tmp_path / "head", port=free_port(), workers=0, cpus_per_node=1, object_store_mb=150)
    worker_env = {
        "PATH": os.environ["PATH"],
        "HOME": str(worker_home),
        "TMPDIR": str(worker_home / "tmp"),
        "RAY_AUTH_MODE": "disabled",
        "RAY_LOGGER_LEVEL": "warning",  # as docs/cluster.md says to start it
        # (and the same Python and tune_lsd as the head, as on real machines)
        **{k: os.environ[k] for k in ("PYTHONPATH", "VIRTUAL_ENV") if k in os.environ},
    }
    hide_runs = f'mount -t tmpfs none {runs} && exec "$@"'
    worker = subprocess.Popen(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            hide_runs,
            "sh",
            *node_command(address, 0, 1, None, 150 * 2**20),
        ],
        env=worker_env,
        stdout=open(tmp_path / "worker.log", "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield address, wait_for_nodes(address, 2)["worker"], worker
    finally:
        end_process_tree(worker.pid, grace_s=0)
        cluster_down(tmp_path / "head")


@pytest.mark.skipif(not can_hide_folders(), reason="needs root and mount namespaces (unshare -m) to hide a folder")
def test_two_nodes_sharing_only_the_bucket_complete_a_search_and_a_killed_worker_s_trial_resumes(
    object_store, tmp_path, monkeypatch
):
    """The bucket and the tracking server are all the nodes share; the trials on the worker get
    the S3 credentials through Ray's runtime environment. The dataset is in the bucket too: the
    driver fetches and decodes it, the worker's trials get it through Ray's object store. SIGKILL
    of the worker node mid-trial: the trial continues on the head from its checkpoint in the bucket."""
    import pyarrow.fs
    from fake_datasets import write_fake_dataset

    from tune_lsd.cluster import end_process_tree

    for key, value in object_store.credentials().items():
        monkeypatch.setenv(key, value)
    started = time.time()
    storage = object_store.uri(f"two-nodes-{tmp_path.name}")
    write_fake_dataset("cub", tmp_path / "cub", classes=100, per_class=4, size=32)
    dataset = object_store.uri(f"datasets-{tmp_path.name}/CUB_200_2011")
    filesystem, path = Location(dataset)._fs()
    pyarrow.fs.copy_files(
        str(tmp_path / "cub"), path, source_filesystem=pyarrow.fs.LocalFileSystem(), destination_filesystem=filesystem
    )
    data = ["--set", "data.dataset=cub", "--set", f"data.root={dataset}"]
    port = free_port()
    server = start_server(tmp_path, port)
    client = MlflowClient(f"http://127.0.0.1:{port}")
    log = tmp_path / "driver.log"
    try:
        with two_nodes(tmp_path) as (address, worker_id, worker):
            driver = start_tune_lsd(
                "search",
                "--space",
                "lsd",
                "--name",
                "nodes",
                "--num-samples",
                "3",
                "--max-concurrent",
                "2",
                "--scheduler",
                "fifo",
                "--max-failures",
                "2",
                "--address",
                address,
                "--storage",
                storage,
                "--tracking-uri",
                f"http://127.0.0.1:{port}",
                *FAST,
                "--set",
                "schedule.epochs=5",
                *data,
                cwd=tmp_path,
                log=log,
            )
            try:
                deadline = time.time() + 300
                while True:  # a trial with two epochs done on the worker node: kill that node
                    on_worker = [
                        r
                        for r in trial_runs(client, "nodes")
                        if r.data.tags.get(NODES_TAG) == worker_id
                        and len(client.get_metric_history(r.info.run_id, "val/recall_at_1")) >= 2
                    ]
                    if on_worker:
                        break
                    assert driver.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                    time.sleep(1)
                end_process_tree(worker.pid, grace_s=0)
                driver.wait(timeout=400)
                assert driver.returncode == 0, log.read_text()[-3000:]
            finally:
                kill_tree(driver)
        trials = trial_runs(client, "nodes")
        steps = {
            r.info.run_id: sorted(m.step for m in client.get_metric_history(r.info.run_id, "val/recall_at_1"))
            for r in trials
        }
    finally:
        kill_tree(server)
    assert len(trials) == 3 and {r.data.tags[STATE_TAG] for r in trials} == {"completed"}
    moved = [r for r in trials if r.data.tags[NODES_TAG].startswith(worker_id + ",")]  # then on the head
    assert moved, [r.data.tags[NODES_TAG] for r in trials]
    for run in moved:  # from its checkpoint: at most the epoch in flight again
        assert set(steps[run.info.run_id]) == set(range(1, 6)) and len(steps[run.info.run_id]) <= 6, steps
    experiment = Location(storage) / "ray" / "nodes"
    assert len(bucket_epochs(experiment)) == 3
    secret = object_store.secret_key.encode()  # handed to the trials; in no log of the nodes' Ray
    logs = ray_logs_since(started) + [p for p in (tmp_path / "worker-home").rglob("*") if p.is_file()]
    assert logs and not [p for p in logs if secret in p.read_bytes()]
    assert not list((tmp_path / "runs").glob("ray")), "Ray wrote to the runs folder instead of the bucket"
    assert "dataset: cub at 32 px: 200 train + 200 test images" in log.read_text()
    assert not (tmp_path / "worker-home" / ".cache" / "tune_lsd").exists(), "a trial on the worker loaded the data"


@pytest.mark.skipif(not can_hide_folders(), reason="needs root and mount namespaces (unshare -m) to hide a folder")
def test_records_a_worker_kept_while_the_server_was_down_are_named_and_synced_on_that_node(
    object_store, tmp_path, monkeypatch
):
    """The tracking server goes down once both trials (one per node) have reported an epoch and
    comes back only after the search ended: the search names the worker node that keeps records
    and the command to run there; `tune-lsd sync` on the head and on the worker (in its mount
    namespace, through nsenter) then delivers every epoch and checkpoint."""
    import subprocess
    import sys

    for key, value in object_store.credentials().items():
        monkeypatch.setenv(key, value)
    storage = object_store.uri(f"outage-{tmp_path.name}")
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    client = MlflowClient(uri)
    log = tmp_path / "driver.log"
    with two_nodes(tmp_path) as (address, worker_id, worker):
        driver = start_tune_lsd(
            "search",
            "--space",
            "lsd",
            "--name",
            "down",
            "--num-samples",
            "2",
            "--max-concurrent",
            "2",
            "--scheduler",
            "fifo",
            "--address",
            address,
            "--storage",
            storage,
            "--tracking-uri",
            uri,
            *FAST,
            "--set",
            "schedule.epochs=4",
            cwd=tmp_path,
            log=log,
        )
        try:
            deadline = time.time() + 300
            while True:  # both trials running and recorded: the server goes away for the rest of the search
                runs = trial_runs(client, "down")
                if len(runs) == 2 and all(client.get_metric_history(r.info.run_id, "val/recall_at_1") for r in runs):
                    break
                assert driver.poll() is None and time.time() < deadline, log.read_text()[-3000:]
                time.sleep(0.5)
            kill_tree(server)
            driver.wait(timeout=600)
        finally:
            kill_tree(driver)
        output = log.read_text()
        assert driver.returncode == 0, output[-3000:]
        named = [line for line in output.splitlines() if line.startswith("warning: node ")]
        assert len(named) == 1 and f"({worker_id[:8]}) keeps tracking records of 1 trial (" in named[0], output[-3000:]
        assert f"run on that node: tune-lsd sync down --storage {storage}" in named[0]
        assert len((Location(storage) / "searches" / "down" / "undelivered").names(".json")) >= 1

        server = start_server(tmp_path, port)  # back, with the same store
        try:
            on_head = tune_lsd("sync", "down", "--storage", storage, cwd=tmp_path, timeout=300)
            assert on_head.returncode == 0, on_head.stdout[-2000:] + on_head.stderr[-2000:]
            on_worker = subprocess.run(
                [
                    "nsenter",
                    "-t",
                    str(worker.pid),
                    "-m",
                    "--",
                    sys.executable,
                    "-m",
                    "tune_lsd.cli",
                    "sync",
                    "down",
                    "--storage",
                    storage,
                ],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert on_worker.returncode == 0, on_worker.stdout[-2000:] + on_worker.stderr[-2000:]
            assert "records of 1 spools delivered" in on_worker.stdout, on_worker.stdout
            runs = trial_runs(client, "down")
            steps = {
                r.info.run_id: sorted({m.step for m in client.get_metric_history(r.info.run_id, "val/recall_at_1")})
                for r in runs
            }
            checkpoints = {
                r.info.run_id: [a.path for a in client.list_artifacts(r.info.run_id, "checkpoint")] for r in runs
            }
            states = {r.data.tags.get(NODES_TAG): r.data.tags.get(STATE_TAG) for r in runs}
        finally:
            kill_tree(server)
    assert all(s == [1, 2, 3, 4] for s in steps.values()), steps
    assert all(c == ["checkpoint/model.pt"] for c in checkpoints.values()), checkpoints
    assert worker_id in states and set(states.values()) == {"completed"}, states
    assert (Location(storage) / "searches" / "down" / "undelivered").names(".json") == []


def ray_logs_since(started: float) -> list[Path]:
    """The log files of every Ray session started since ``started`` (/tmp/ray: Ray's default)."""
    return [
        log
        for session in Path("/tmp/ray").glob("session_2*")
        if session.stat().st_mtime >= started - 1
        for log in (session / "logs").rglob("*")
        if log.is_file()
    ]


def wait_for_nodes(address: str, count: int, timeout_s: float = 120) -> dict[str, str]:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            ids = node_ids(address)
        except (ValueError, IndexError):
            ids = {}
        if len(ids) >= count:
            return ids
        time.sleep(2)
    raise AssertionError(f"{count} nodes did not join {address}")


def trial_runs(client, name: str) -> list:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'trial'")


@pytest.mark.skipif(not can_hide_folders(), reason="needs root and mount namespaces (unshare -m) to hide a folder")
def test_a_node_that_cannot_use_the_storage_is_named_before_any_trial_and_file_credentials_reach_the_nodes(
    object_store, tmp_path, monkeypatch
):
    """The worker node cannot see the driver's runs folder: a search keeping its checkpoints
    there stops with one line that names the worker, before any trial. The bucket's credentials
    only in the driver's ~/.aws/credentials (the worker has its own HOME, without them): the
    driver hands them to the nodes as it does the environment's, so the worker can write to the
    bucket and the search completes."""
    driver_home = tmp_path / "driver-home"
    (driver_home / ".aws").mkdir(parents=True)
    (driver_home / ".aws" / "credentials").write_text(
        f"[default]\naws_access_key_id = {object_store.access_key}\naws_secret_access_key = {object_store.secret_key}\n"
    )
    monkeypatch.setenv("HOME", str(driver_home))  # the driver's and the head node's
    for key in object_store.credentials():
        monkeypatch.delenv(key, raising=False)
    port = free_port()
    server = start_server(tmp_path, port)
    tracking = ["--tracking-uri", f"http://127.0.0.1:{port}", *FAST, "--set", "schedule.epochs=1"]
    try:
        with two_nodes(tmp_path) as (address, worker_id, _):
            unseen = tune_lsd(
                "search",
                "--space",
                "lsd",
                "--name",
                "unseen",
                "--num-samples",
                "2",
                "--address",
                address,
                *tracking,
                cwd=tmp_path,
                timeout=300,
            )
            stored = tune_lsd(
                "search",
                "--space",
                "lsd",
                "--name",
                "stored",
                "--num-samples",
                "1",
                "--address",
                address,
                "--storage",
                object_store.uri(f"files-{tmp_path.name}"),
                *tracking,
                cwd=tmp_path,
                timeout=400,
            )
    finally:
        kill_tree(server)
    last = unseen.stderr.strip().splitlines()[-1]
    assert unseen.returncode == 2 and last.startswith("error: the storage path ") and "is not visible from node" in last
    assert worker_id[:8] in last, (last, worker_id)
    assert not list((tmp_path / "runs" / "ray" / "unseen").glob("DMLTrainable_*")), "a trial started"
    assert stored.returncode == 0, stored.stderr[-3000:]
    assert "search 'stored' completed: 1 trials (0 errored)" in stored.stdout
