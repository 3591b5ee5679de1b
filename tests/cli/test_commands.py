"""tune_lsd/cli: `tune-lsd train` / `evaluate` as a user runs them, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

QUICK = [
    "--set",
    "data.max_classes=40",
    "--set",
    "data.max_test_classes=30",
    "--set",
    "data.batch_size=64",
    "--set",
    "schedule.epochs=2",
    "--set",
    "schedule.steps_per_epoch=3",
    "--set",
    "eval.nmi=false",
    "--set",
    "lsd.ema_momentum=0.5",
]


def tune_lsd(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tune_lsd.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=600
    )


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


BAD_FILES = {
    "broken.yaml": "data:\n  image_size: [32\n",
    "empty.yaml": "",
    "list.yaml": "- data\n- model\n",
    "wrong_type.yaml": "data:\n  image_size: big\n",
    "unknown_key.yaml": "lsd:\n  temprature: 0.1\n",
    "broken_space.yaml": "base: glyphs_search\nparams:\n  optim.lr: {type: loguniform, low: 1.0e-4\n",
    "no_params.yaml": "base: glyphs_search\nparams: {}\n",
    "notes.pt": "not a checkpoint",
}
# Every bad input a user may give: (arguments, what the one line must say). {port}: a port in use.
BAD_INPUTS = [
    (["train", "--config", "broken.yaml"], "config broken.yaml is not valid YAML"),
    (["train", "--config", "empty.yaml"], "config empty.yaml is empty"),
    (["train", "--config", "list.yaml"], "expected a mapping"),
    (["train", "--config", "wrong_type.yaml"], "invalid config value data.image_size"),
    (["train", "--config", "unknown_key.yaml"], "unknown config key 'lsd.temprature'"),
    (["train", "--config", "no_such_config"], "neither a file nor one of"),
    (["train", "--set", "lsd.temprature=0.1"], "unknown config key 'lsd.temprature'"),
    (["train", "--set", "schedule.epochs=abc"], "invalid config value schedule.epochs"),
    (["train", "--set", "schedule.epochs=-2"], "invalid config value schedule.epochs"),
    (["train", "--set", "schedule.epochs"], "is not of the form section.key=value"),
    (["train", "--set", "data.image_size=[3"], "the value is not valid YAML"),
    (["train", "--set", "loss.name=arcface"], "loss.name"),
    (["train", "--set", "data.dataset=cub", "--set", "data.root=/no/such/folder"], "does not exist: /no/such/folder"),
    (["train", "--set", "data.dataset=cub"], "needs data.root"),
    (["search", "--space", "broken_space.yaml"], "search space broken_space.yaml is not valid YAML"),
    (["search", "--space", "empty.yaml"], "search space empty.yaml is empty"),
    (["search", "--space", "no_params.yaml"], "has no params"),
    (["search", "--num-samples", "0"], "--num-samples 0"),
    (["search", "--num-samples", "-3"], "--num-samples -3"),
    (["search", "--max-concurrent", "0"], "--max-concurrent 0"),
    (["search", "--cpus-per-trial", "0"], "--cpus-per-trial 0.0"),
    (["search", "--name", "team/demo"], "--name 'team/demo': MLflow experiment and folder name"),
    (["search", "--name", "my demo"], "--name 'my demo'"),
    (["search", "--tracking-uri", "htp://127.0.0.1:5000"], "unknown scheme 'htp'"),
    (["search", "--tracking-uri", "http://127.0.0.1:9"], "is unreachable"),
    (["search", "--set", "data.dataset=cub", "--set", "data.root=/no/such/folder"], "does not exist: /no/such/folder"),
    (["search", "--resume", "never_ran"], "no search named 'never_ran'"),
    (
        ["search", "--storage", "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http"],
        "the endpoint 127.0.0.1:9 does not answer",
    ),
    (
        ["search", "--resume", "s3", "--storage", "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http"],
        "the endpoint 127.0.0.1:9 does not answer",
    ),
    (["search", "--storage", "nosuchscheme://bucket/x"], "storage nosuchscheme://bucket/x"),
    (["search", "--storage", "s3://ab/searches"], "'ab' is not a valid S3 bucket name"),
    (["search", "--storage", "s3://KEY:SECRET@bucket/x"], "the URI carries credentials"),
    (["search", "--storage-patience-s", "0"], "--storage-patience-s 0.0: input should be greater than 0"),
    (
        ["server", "--artifacts-destination", "s3://bucket/x?endpoint_override=127.0.0.1:9&scheme=http"],
        "the endpoint 127.0.0.1:9 does not answer",
    ),
    (["evaluate", "--checkpoint", "notes.pt"], "is not a tune_lsd checkpoint or model file"),
    (["evaluate", "--checkpoint", "/no/such.pt"], "checkpoint not found"),
    (["export", "--experiment", "demo"], "no MLflow store"),
    (["report", "demo"], "no MLflow store"),
    (["ls", "--tracking-uri", "htp://127.0.0.1:5000"], "unknown scheme 'htp'"),
    (["prune", "never_ran"], "no search named 'never_ran'"),
    (["prune", "demo", "--keep-models", "-1"], "--keep-models -1: must be 0 (keep all) or more"),
    (["search", "--keep-models", "-2"], "--keep-models -2: input should be greater than or equal to 0"),
    (["embed", "--model", "notes.pt", "--images", "."], "is not a tune_lsd checkpoint or model file"),
    (["embed", "--model", "models:/demo-best@champion", "--images", "."], "no MLflow store"),
    (["server", "--port", "{port}"], "pick another with --port"),
]


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a) for a in (args for args, _ in BAD_INPUTS)])
def test_bad_input_is_one_line_and_leaves_nothing_behind(args, message, tmp_path, monkeypatch, capsys):
    """In this process (`tune-lsd` itself is `main`; a fresh interpreter per case cost ~4 s each):
    the exit status, stderr and the folder are what a user of the command would see."""
    import socket
    import warnings

    from tune_lsd import cli

    for name, text in BAD_FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    for variable in (
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
        "MLFLOW_HTTP_REQUEST_TIMEOUT",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    ):  # main() sets defaults: undo them afterwards
        monkeypatch.setenv(variable, os.environ.get(variable, ""))
        monkeypatch.delenv(variable)
    monkeypatch.setattr(warnings, "formatwarning", warnings.formatwarning)
    with socket.socket() as busy, warnings.catch_warnings():  # a port something listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        status = cli.main([a.format(port=busy.getsockname()[1]) for a in args])
    stderr = capsys.readouterr().err
    lines = stderr.strip().splitlines()
    assert status == 2, stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(BAD_FILES)  # no store, run folder or search left


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "broken.yaml").write_text(BAD_FILES["broken.yaml"])
    result = tune_lsd("--debug", "train", "--config", "broken.yaml", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "ConfigError" in result.stderr


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

    start_search_run(
        default_tracking_uri(tmp_path / "runs"), "uisearch", {"space": "lsd"}, tmp_path / "runs" / "mlartifacts"
    )
    port = free_port()
    server = start_tune_lsd("ui", "--port", str(port), cwd=tmp_path, log=tmp_path / "ui.log")
    try:
        body, deadline = "", time.time() + 90
        while time.time() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/ajax-api/2.0/mlflow/experiments/search",
                    method="POST",
                    data=b'{"max_results": 10}',
                    headers={"Content-Type": "application/json"},
                )
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
    assert result.stderr.strip().splitlines() == [
        f"error: no MLflow store at {tmp_path / 'nothing-here' / 'mlflow.db'}: "
        "run a search first, or point --runs-dir / --tracking-uri at one"
    ]
    assert not (tmp_path / "nothing-here").exists()  # nothing created on the way
