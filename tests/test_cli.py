"""tune_lsd/cli.py: `tune-lsd train` / `evaluate` as a user runs them, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

QUICK = ["--set", "data.max_classes=40", "--set", "data.max_test_classes=30", "--set", "data.batch_size=64",
         "--set", "schedule.epochs=2", "--set", "schedule.steps_per_epoch=3", "--set", "eval.nmi=false",
         "--set", "lsd.ema_momentum=0.5"]


def tune_lsd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune_lsd.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600)


def test_train_writes_run_folder_and_evaluate_reproduces_test_metrics(tmp_path):
    run_dir = tmp_path / "run"
    result = tune_lsd("train", "--config", "glyphs_demo", "-o", str(run_dir), *QUICK)
    assert result.returncode == 0, result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {"untrained", "raw_pixels", "test", "best_epoch", "best_val"} <= set(summary)
    assert (run_dir / "config.yaml").is_file() and (run_dir / "best.pt").is_file()
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    assert "epoch 2/2" in result.stdout and "val R@1" in result.stdout

    evaluated = tune_lsd("evaluate", "--checkpoint", str(run_dir / "best.pt"))
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["test/recall@1"] == pytest.approx(summary["test"]["test/recall@1"])


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "lsd.temprature=0.1"], "unknown config key 'lsd.temprature'"),
        (["train", "--set", "data.dataset=cub", "--set", "data.root=/no/such/folder"], "does not exist: /no/such/folder"),
        (["train", "--set", "loss.name=arcface"], "loss.name"),
        (["train", "--config", "no_such_config"], "neither a file nor one of"),
        (["evaluate", "--checkpoint", "/no/such.pt"], "checkpoint not found"),
    ],
)
def test_bad_input_is_one_clear_line(args, message):
    result = tune_lsd(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_help_has_examples():
    result = tune_lsd("train", "--help")
    assert result.returncode == 0 and "examples:" in result.stdout and "--set" in result.stdout


def test_ui_serves_the_mlflow_ui_of_the_runs_folder_and_ends_with_it(tmp_path):
    import os
    import signal
    import time
    import urllib.request
    from pathlib import Path

    from searching import free_port, kill_tree, start_tune_lsd
    from tune_lsd.cluster import descendants
    from tune_lsd.tracking import default_tracking_uri, start_search_run

    start_search_run(default_tracking_uri(tmp_path / "runs"), "uisearch", {"space": "lsd"}, tmp_path / "runs" / "mlartifacts")
    port = free_port()
    server = start_tune_lsd("ui", "--port", str(port), cwd=tmp_path, log=tmp_path / "ui.log")
    try:
        body, deadline = "", time.time() + 90
        while time.time() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search", method="POST",
                    data=b'{"max_results": 10}', headers={"Content-Type": "application/json"})
                body = urllib.request.urlopen(request, timeout=5).read().decode()
                break
            except OSError:
                time.sleep(1)
        assert "uisearch" in body, (tmp_path / "ui.log").read_text()[-2000:]
        assert "127.0.0.1" in (tmp_path / "ui.log").read_text()
        served_by = descendants(server.pid)  # `mlflow ui` and its uvicorn worker
        assert served_by
        os.kill(server.pid, signal.SIGTERM)  # what a process manager sends: nothing may be left behind
        server.wait(timeout=30)
        deadline = time.time() + 20
        while time.time() < deadline and any(Path(f"/proc/{pid}").exists() for pid in served_by):
            time.sleep(0.5)
        assert not [pid for pid in served_by if Path(f"/proc/{pid}").exists()]
    finally:
        kill_tree(server)


@pytest.mark.parametrize("command", [["ls"], ["report", "demo"], ["export", "--experiment", "demo"], ["ui"]])
def test_reading_commands_refuse_a_missing_store_in_one_line(tmp_path, command):
    result = tune_lsd(*command, "--runs-dir", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: no MLflow store at {tmp_path / 'nothing-here' / 'mlflow.db'}: "
                                                  "run a search first, or point --runs-dir / --tracking-uri at one"]
    assert not (tmp_path / "nothing-here").exists()  # nothing created on the way
