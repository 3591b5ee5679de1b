"""tune_lsd/tracking/store.py and names.py against a real MLflow SQLite store: creating it, retries, keys."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tune_lsd import tracking


def open_search_when_released(barrier, results, folder: Path, index: int) -> None:
    barrier.wait()  # every process opens the new store at the same instant
    try:
        context = tracking.start_search_run(
            tracking.default_tracking_uri(folder), f"search{index}", {"space": "x"}, folder / "artifacts"
        )
        results.put(context.experiment_id)
    except Exception as error:
        results.put(f"failed: {str(error)[:200]}")


def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    """Without the lock, MLflow's migrations race ("table _alembic_tmp_experiments already
    exists", "duplicate column name: step") in most tries."""
    import multiprocessing

    fork = multiprocessing.get_context("fork")
    for attempt in range(2):
        folder = tmp_path / f"try{attempt}"
        barrier, results = fork.Barrier(3), fork.Queue()
        processes = [
            fork.Process(target=open_search_when_released, args=(barrier, results, folder, i)) for i in range(3)
        ]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=120) for _ in processes]
        for process in processes:
            process.join(timeout=30)
        assert not [o for o in outcomes if o.startswith("failed")], outcomes
        assert len(set(outcomes)) == 3
        names = {e.name for e in MlflowClient(tracking.default_tracking_uri(folder)).search_experiments()}
        assert {"search0", "search1", "search2"} <= names


def test_unreachable_server_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # only tune_lsd's own retries
    context = tracking.TrackingContext("http://127.0.0.1:9", "0", "none")
    with pytest.raises(tracking.TrackingError) as error:
        tracking.retry(
            lambda: MlflowClient(context.tracking_uri).get_experiment("0"),
            "get_experiment",
            attempts=2,
            first_wait_s=0.1,
        )
    assert "failed after 2 tries" in str(error.value) and "\n" not in str(error.value)


def test_a_failure_without_a_message_is_named_by_its_type():
    def times_out():
        raise TimeoutError()

    with pytest.raises(tracking.TrackingError, match=r"^MLflow log_batch failed after 2 tries: TimeoutError$"):
        tracking.retry(times_out, "log_batch", attempts=2, first_wait_s=0.01)


def test_mlflow_key():
    assert tracking.mlflow_key("val/recall@1") == "val/recall_at_1"
