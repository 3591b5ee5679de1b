"""tune_lsd/cluster.py + search on a real 2-node Ray cluster on 127.0.0.1 (head + 1 worker,
1 CPU each, small object stores). Every node is ended by pid."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from searching import (
    TINY,
    child_runs,
    free_port,
    kill_tree,
    node_ids,
    start_tune_lsd,
    tune_lsd,
    wait_until_search_started,
)

from tune_lsd.cluster import _alive, cluster_down, cluster_up, descendants, end_process_tree
from tune_lsd.tracking import NODES_TAG, STATE_TAG

pytestmark = pytest.mark.slow


@pytest.fixture
def cluster(tmp_path):
    runs = tmp_path / "runs"
    address = cluster_up(runs, port=free_port(), workers=1, cpus_per_node=1, object_store_mb=150)
    nodes = json.loads((runs / "cluster" / "nodes.json").read_text())["nodes"]
    trees = {n["role"]: [n["pid"], *descendants(n["pid"])] for n in nodes}
    yield address, runs, nodes
    if (runs / "cluster" / "nodes.json").exists():
        cluster_down(runs)
    time.sleep(1)
    assert not any(_alive(pid) for tree in trees.values() for pid in tree), "a Ray process outlived cluster down"


def wait_for_runs(runs: Path, name: str, condition, driver_log: Path, timeout: float = 300):
    wait_until_search_started(driver_log, name)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(2)
        client, _, children = child_runs(runs, name)
        if condition(client, children):
            return client, children
    raise AssertionError(f"condition not met within {timeout} s")


def test_driver_killed_on_the_cluster_resumes_and_trials_ran_on_both_nodes(cluster, tmp_path):
    address, runs, _ = cluster
    ids = node_ids(address)
    args = [
        "search",
        "--space",
        "lsd",
        "--name",
        "onc",
        "--num-samples",
        "5",
        "--max-concurrent",
        "2",
        "--scheduler",
        "fifo",
        "--address",
        address,
        "--set",
        "schedule.epochs=3",
        *TINY,
        "--set",
        "model.backbone=resnet10t",  # trials long enough to be caught under way
    ]
    driver = start_tune_lsd(*args, cwd=tmp_path, log=tmp_path / "driver.log")
    try:

        def two_done_and_the_next_under_way(c, ch):  # see test_search: do not kill at a suggestion
            done = sum(r.data.tags.get(STATE_TAG) == "completed" for r in ch)
            return (
                done >= 2
                and len(ch) > done
                and all(len(c.get_metric_history(r.info.run_id, "val/recall_at_1")) >= 1 for r in ch)
            )

        client, children = wait_for_runs(runs, "onc", two_done_and_the_next_under_way, tmp_path / "driver.log")
    finally:
        kill_tree(driver)
    finished = {r.info.run_id for r in children if r.data.tags.get(STATE_TAG) == "completed"}

    resumed = tune_lsd("search", "--resume", "onc", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    client, _, children = child_runs(runs, "onc")
    assert len(children) == 5 and {r.data.tags[STATE_TAG] for r in children} == {"completed"}
    used_nodes = {node for r in children for node in r.data.tags[NODES_TAG].split(",")}
    assert used_nodes == {ids["head"], ids["worker"]}
    for run in children:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val/recall_at_1")]
        assert sorted(set(steps)) == [1, 2, 3]
        if run.info.run_id in finished:
            assert len(steps) == 3  # finished before the kill: not trained again


def test_worker_node_killed_mid_search_the_trial_resumes_from_its_checkpoint(cluster, tmp_path):
    address, runs, nodes = cluster
    worker_id = node_ids(address)["worker"]
    args = [
        "search",
        "--space",
        "lsd",
        "--name",
        "wk",
        "--num-samples",
        "3",
        "--max-concurrent",
        "2",
        "--scheduler",
        "fifo",
        "--max-failures",
        "3",
        "--address",
        address,
        "--set",
        "schedule.epochs=6",
        *TINY,
    ]
    driver = start_tune_lsd(*args, cwd=tmp_path, log=tmp_path / "driver.log")
    try:

        def on_worker_with_progress(client, children):
            return any(
                r.data.tags.get(NODES_TAG) == worker_id
                and len(client.get_metric_history(r.info.run_id, "val/recall_at_1")) >= 2
                for r in children
            )

        wait_for_runs(runs, "wk", on_worker_with_progress, tmp_path / "driver.log")
        worker = next(n for n in nodes if n["role"] == "worker1")
        end_process_tree(worker["pid"], grace_s=0)  # SIGKILL the whole worker node
        driver.wait(timeout=400)
    finally:
        kill_tree(driver)
    log = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 0, log[-3000:]
    client, _, children = child_runs(runs, "wk")
    assert len(children) == 3 and {r.data.tags[STATE_TAG] for r in children} == {"completed"}
    moved = [r for r in children if r.data.tags[NODES_TAG].startswith(worker_id) and "," in r.data.tags[NODES_TAG]]
    assert moved, "no trial was restarted on another node"
    for run in moved:
        steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, "val/recall_at_1"))
        assert set(steps) == set(range(1, 7))
        # resumed from a checkpoint, not from scratch: at most the epoch in flight is repeated
        assert len(steps) <= 7


def test_cluster_up_refuses_a_busy_port_and_down_needs_a_cluster(tmp_path):
    import socket

    from tune_lsd.cluster import ClusterError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(ClusterError, match="is in use"):
            cluster_up(tmp_path, port=busy.getsockname()[1])
    with pytest.raises(ClusterError, match="no cluster recorded"):
        cluster_down(tmp_path)
