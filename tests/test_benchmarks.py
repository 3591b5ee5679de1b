"""benchmarks/: each script runs on a tiny setting and prints its ratio last (no timing asserted)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def run(script: str, *args: str, timeout: float = 600) -> list[str]:
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/bin:/bin", "RAY_AUTH_MODE": "disabled"},
    )
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


@pytest.mark.slow
def test_lsd_step_cost_benchmark_runs():
    lines = run("lsd_step_cost.py", "--steps", "2", "--rounds", "1")
    assert lines[-1].startswith("ratio LSD/base step time:")


@pytest.mark.slow
def test_search_overhead_benchmark_runs():
    lines = run(
        "search_overhead.py",
        "--epochs",
        "1",
        "--set",
        "model.backbone=test_resnet",
        "--set",
        "data.max_classes=40",
        "--set",
        "data.batch_size=64",
        "--set",
        "schedule.steps_per_epoch=2",
    )
    assert lines[-1].startswith("ratio search/plain:")


TINY_SEARCH = [
    "--set",
    "data.max_classes=40",
    "--set",
    "data.max_test_classes=40",
    "--set",
    "schedule.steps_per_epoch=2",
]


@pytest.mark.slow
def test_search_efficiency_benchmark_compares_an_arm_with_random_searchs_budget(tmp_path):
    # Random search runs through Ray Tune as every other arm but plain Optuna does.
    lines = run(
        "search_efficiency.py",
        "--seeds",
        "0",
        "--arms",
        "optuna",
        "--random-trials",
        "2",
        "--asha-trials",
        "3",
        "--set",
        "schedule.epochs=2",
        *TINY_SEARCH,
        "--out",
        str(tmp_path),
    )
    seed, budget, random_best, optuna = (
        cell.strip() for cell in next(line for line in lines if line.startswith("| 0 |")).split("|")[1:-2]
    )
    assert int(budget) == 4  # random search's budget: 2 trials x 2 epochs
    best, fraction, seconds = (part.strip() for part in optuna.split("/"))
    reached = fraction != "not reached"
    assert reached == (float(best) >= float(random_best))  # matched random's best within the budget, or not
    assert not reached or (0 < float(fraction) <= 1 and float(seconds) > 0)
    curves = json.loads((tmp_path / "results.json").read_text())["0"]
    assert len(curves["random"]) == 4 and 3 <= len(curves["optuna"]) <= 6  # every trial, pruned at 1 epoch or not
    assert [value for _, value in curves["optuna"]] == sorted(value for _, value in curves["optuna"])  # best so far
    assert (tmp_path / "search_efficiency.png").stat().st_size > 10_000
    assert lines[-1].startswith("| optuna | ") and lines[-1].endswith(" | 1/1 |" if reached else " | 0/1 |")


@pytest.mark.slow
def test_lsd_study_pairs_every_seed_of_both_winners_and_gives_intervals(tmp_path):
    # The pretrained regime at 32 px and 2 steps: the path the scratch regime shares, plus the ImageNet weights.
    lines = run(
        "lsd_study.py",
        "--regime",
        "pretrained",
        "--noise",
        "0.3",
        "--num-samples",
        "1",
        "--seeds",
        "2",
        "--steps",
        "2",
        "--set",
        "schedule.epochs=1",
        "--set",
        "data.image_size=32",
        *TINY_SEARCH,
        "--out",
        str(tmp_path),
    )
    rows = {
        line.split("|")[1].strip(): line.split("|")[2:] for line in lines if line.startswith("| pretrained, 30% noise:")
    }
    assert set(rows) == {
        f"pretrained, 30% noise: {label}"
        for label in ("raw pixels", "untrained network", "LSD (tuned)", "base loss only (tuned)")
    }
    assert int(rows["pretrained, 30% noise: LSD (tuned)"][2]) == 2
    assert int(rows["pretrained, 30% noise: untrained network"][2]) == 1  # the floors, measured once
    summaries = {}
    comparison = tmp_path / "comparisons" / "study-pretrained-noise0.3"
    for space in ("lsd_pretrained", "baseline_pretrained"):
        folder = comparison / f"study-pretrained-noise0.3-{space}-s0"
        summaries[space] = [
            json.loads((folder / f"retrain-seed{seed}" / "summary.json").read_text()) for seed in (0, 1)
        ]
        assert [
            yaml.safe_load((folder / f"retrain-seed{seed}" / "config.yaml").read_text())["seed"] for seed in (0, 1)
        ] == [0, 1]
    # The differences row over retrain seeds: the mean of the per-seed differences and its interval.
    difference_row = next(line for line in lines if line.startswith("| pretrained, 30%, over retrain seeds |")).split(
        "|"
    )
    mean, low, high = map(float, re.match(r" ([-+.\d]+) \[([-+.\d]+), ([-+.\d]+)\]", difference_row[2]).groups())
    differences = [
        a["test"]["test/recall@1"] - b["test"]["test/recall@1"]
        for a, b in zip(summaries["lsd_pretrained"], summaries["baseline_pretrained"])
    ]
    assert mean == pytest.approx(sum(differences) / 2, abs=1e-4)
    assert low - 1e-4 <= min(differences) and max(differences) <= high + 1e-4  # 2 pairs: the interval spans both
    assert any(line.startswith("pretrained, 30% noise: verdict: ") for line in lines)
    assert "searched parameters: LSD (tuned) 6" in "\n".join(lines)
    assert (tmp_path / "study.png").stat().st_size > 10_000
    assert lines[-1].startswith("ratio LSD/baseline test R@1, pretrained at 30% noise:")
    # The tables come back from results.json alone.
    assert run("lsd_study.py", "--report-only", "--out", str(tmp_path))[-8:] == lines[-8:]


def test_gpu_benchmark_is_a_no_op_without_a_gpu():
    lines = run("gpu.py")
    assert lines == [
        "benchmarks/gpu.py: no CUDA GPU here, nothing measured (run it on a GPU machine; "
        "--device cpu --tiny checks the script at toy sizes)"
    ]


@pytest.mark.slow
def test_gpu_benchmark_runs_every_part_at_toy_sizes_on_the_cpu(tmp_path):
    lines = run(
        "gpu.py", "--device", "cpu", "--tiny", "--no-compile", "--steps", "2", "--trials", "4", "--out", str(tmp_path)
    )
    text = "\n".join(lines)
    assert "largest metric difference 0.0e+00" in text  # torch and faiss neighbours agree
    actors = int(re.search(r"4 trials, \d+ epochs, on (\d+) actor processes", text).group(1))
    assert actors <= 2  # 2 CPUs, 1 per trial: 4 trials reuse at most 2 actors
    assert re.search(r"runs/ray left: 0\.\d MB", text)  # checkpoints deleted at the end
    # The cub preset's part, twice: the first search decodes its CUB-format tree into the cache.
    assert "tree: 120 JPEGs in 20 classes" in text and "search 'preset-cached' completed: 4 trials (0 errored)" in text
    assert re.search(r"decoding into the cache \(seconds\): \{'cub test in .*'cub train in ", text)  # sorted
    started = [float(s) for s in re.findall(r"the first epoch started (\S+) s after the command", text)]
    assert len(started) == 3 and all(0 < seconds < 300 for seconds in started)  # the demo search + the preset twice
    assert lines[-1].startswith("ratio engine/plain loop: base ") and "cub preset search, warm cache: " in lines[-1]


@pytest.mark.slow
def test_champion_benchmark_agrees_with_the_engine(asha_search):
    folder, _ = asha_search
    lines = run("champion.py", "asha", "--runs-dir", str(folder / "runs"), "--batch", "16")
    text = "\n".join(lines)
    assert float(re.search(r"largest embedding difference pyfunc - engine: (\S+)", text).group(1)) < 1e-5
    assert float(re.search(r"served embeddings: largest difference from the engine's (\S+)", text).group(1)) < 1e-5
    recalls = re.findall(r"test through the (?:engine|pyfunc): Recall@1 (\S+)", text)
    assert len(recalls) == 2 and recalls[0] == recalls[1]
    assert "a search trial's run" in text  # the search was not finalized: its champion is its best trial
    assert lines[-1].startswith("ratio pyfunc/engine embedding time:")


def test_decode_cache_benchmark_runs():
    lines = run("decode_cache.py", "--images", "60", "--slice", "20", "--size", "32")
    assert any(line.startswith("first load (decode into the cache") for line in lines)
    assert sum("draft margin" in line for line in lines) == 4
    assert lines[-1].startswith("ratio first/second load:")


@pytest.mark.slow
def test_scale_benchmark_records_every_trial_once_and_saves_ray_state_on_a_period():
    trials = 120
    lines = run(
        "scale.py",
        "--trials",
        str(trials),
        "--concurrent",
        "8",
        "--epochs",
        "2",
        "--epoch-s",
        "0.2",
        "--keep-models",
        "5",
    )
    text = "\n".join(lines)
    assert f"MLflow: {trials} trial runs of {trials}, 0 epochs logged twice: exact" in text, text
    assert f"trial models kept in MLflow: 5 of {trials} trials (--keep-models 5)" in text, text
    saves = int(re.search(r"state saves: (\d+)", text).group(1))
    steps = int(re.search(r"controller steps: (\d+)", text).group(1))
    # on Ray's period (and when a trial registered its second checkpoint), not after every step
    assert 1 <= saves < steps / 5, text
    assert float(re.search(r"\(([\d.]+) kB a trial\)", text).group(1)) < 30, text  # lean results to Ray
    assert lines[-1].startswith("ratio wall/ideal:")


def test_searcher_cost_benchmark_times_every_searcher():
    lines = run("searcher_cost.py", "--trials", "12", "--suggestions", "1")
    assert lines[0].startswith("| trials seen | TPE | GP alone | gp (TPE past 1000) | random |"), lines
    assert re.fullmatch(r"\| 12 (\| [\d.]+ s ){4}\|", lines[-1]), lines


@pytest.mark.slow
def test_chaos_benchmark_ends_a_search_exactly_through_a_fault_of_each_kind():
    """benchmarks/chaos.py at toy size (3-4 minutes): the worker node, the driver, the tracking
    server and the object store each SIGKILLed once during one search on a two-node cluster,
    and restarted; the search still ends with its trials and epochs, and the champion."""
    lines = run(
        "chaos.py",
        *("--trials", "4", "--epochs", "10", "--faults", "1", "--down-s", "5", "15", "--gap-s", "5", "10"),
        "--no-baseline",
        timeout=900,
    )
    assert not [line for line in lines if line.startswith("FAILED")]  # (and exit status 0)
    row = [cell.strip() for cell in next(line for line in lines if line.startswith("| chaos |")).split("|")]
    faults, trials, epochs, trained = row[2:6]
    assert faults == "1/1/1/1", lines  # every kind of fault happened while the search ran
    assert trials == "4/4"
    expected, in_mlflow, _ = (int(number) for number in epochs.split("/"))
    assert expected == in_mlflow == 40 and int(trained) >= 40
