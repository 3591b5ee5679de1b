"""benchmarks/: each script runs on a tiny setting and prints its ratio last (no timing asserted)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run(script: str, *args: str) -> list[str]:
    result = subprocess.run([sys.executable, str(BENCHMARKS / script), *args], capture_output=True, text=True,
                            timeout=600, env={"PATH": "/usr/bin:/bin", "RAY_AUTH_MODE": "disabled"})
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.strip().splitlines()


def test_evaluation_benchmark_agrees_with_pytorch_metric_learning():
    lines = run("evaluation.py", "--n", "1500", "--classes", "30")
    difference = float(re.search(r"largest metric difference: (\S+)", "\n".join(lines)).group(1))
    assert difference < 1e-5  # the same numbers as PML's AccuracyCalculator
    assert lines[-1].startswith("ratio pml/tune_lsd time:")


@pytest.mark.slow
def test_shared_data_benchmark_runs():
    lines = run("shared_data.py", "--tiny")
    assert lines[-1].startswith("ratio shared/copies:")


def test_lsd_step_cost_benchmark_runs():
    lines = run("lsd_step_cost.py", "--steps", "2", "--rounds", "1")
    assert lines[-1].startswith("ratio LSD/base step time:")


@pytest.mark.slow
def test_search_overhead_benchmark_runs():
    lines = run("search_overhead.py", "--epochs", "1", "--set", "data.max_classes=40", "--set", "data.batch_size=64",
                "--set", "schedule.steps_per_epoch=2")
    assert lines[-1].startswith("ratio search/plain:")
