"""tune_lsd/search/extend.py: `tune-lsd search --extend NAME --num-samples M` runs M more trials of
a completed search in the same MLflow search, its searcher started from the earlier results."""

from __future__ import annotations

import json

import pytest
from searching import TINY, child_runs, tune_lsd

from tune_lsd.tracking import SAMPLED_TAG

pytestmark = pytest.mark.slow


def test_extend_runs_more_trials_in_the_same_search_and_starts_the_searcher_from_the_earlier_results(tmp_path):
    refused = tune_lsd("search", "--extend", "ext", "--num-samples", "2", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].startswith(
        "error: no search named 'ext'"
    )

    first = tune_lsd(
        "search",
        "--space",
        "lsd",
        "--name",
        "ext",
        "--num-samples",
        "3",
        "--max-concurrent",
        "2",
        "--set",
        "schedule.epochs=2",
        *TINY,
        cwd=tmp_path,
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    extended = tune_lsd("search", "--extend", "ext", "--num-samples", "2", cwd=tmp_path)

    assert extended.returncode == 0, extended.stdout[-3000:] + extended.stderr[-2000:]
    out = extended.stdout
    assert "search 'ext': 2 more trials; the optuna searcher starts from the results of its 3 earlier trials" in out
    assert "search 'ext' completed: 2 more trials (5 in all)" in out
    _, parents, children = child_runs(tmp_path / "runs", "ext")
    assert len(parents) == 1 and len(children) == 5  # one search in MLflow, its parent run reopened
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parents[0].info.run_id}
    configs = [json.loads(r.data.tags[SAMPLED_TAG]) for r in sorted(children, key=lambda r: r.info.start_time)]
    assert all(config not in configs[:3] for config in configs[3:])  # no earlier trial run again
    assert (tmp_path / "runs" / "ray" / "ext.ext-3").is_dir()  # the round's own Ray experiment
    # The best trial is chosen among all five trials, and the search is complete again.
    best = max(children, key=lambda r: r.data.metrics["best/val/recall_at_1"])
    assert f"best trial {best.info.run_name}: {best.data.metrics['best/val/recall_at_1']:.4f}" in out
    resumed = tune_lsd("search", "--resume", "ext", cwd=tmp_path)
    assert "search 'ext' is complete (2 trials, 0 errored); nothing to resume" in resumed.stdout
