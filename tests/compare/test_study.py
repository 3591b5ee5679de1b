"""tune_lsd/compare/study.py end to end, at toy size: `tune-lsd compare` killed after its first
retrain and continued with --resume; its printed differences, MLflow records and page checked
against a recomputation from the retrains' own summaries."""

from __future__ import annotations

import json
import math
import re
import time

import numpy as np
import pytest
import scipy.stats
from mlflow.tracking import MlflowClient
from searching import TINY, kill_tree, start_tune_lsd, tune_lsd

from tune_lsd.tracking import default_tracking_uri

pytestmark = pytest.mark.slow

SPACES = ("lsd", "baseline")


def test_compare_continues_after_a_kill_and_its_differences_match_the_retrains(tmp_path):
    args = [
        "compare",
        "--name",
        "cmp",
        "--spaces",
        ",".join(SPACES),
        "--num-samples",
        "1",
        "--search-seeds",
        "2",
        "--seeds",
        "2",
        "--set",
        "schedule.epochs=1",
        "--set",
        "lsd.ramp=constant",
        *TINY,
    ]
    log = tmp_path / "first.log"
    first = start_tune_lsd(*args, cwd=tmp_path, log=log)
    state_file = tmp_path / "runs" / "comparisons" / "cmp" / "compare.json"
    try:
        deadline = time.time() + 300
        while not (state_file.exists() and json.loads(state_file.read_text())["retrains"]):
            assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
    finally:
        kill_tree(first)

    resumed = tune_lsd("compare", "--resume", "cmp", cwd=tmp_path)

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    lines = resumed.stdout.strip().splitlines()
    assert lines[-1].startswith("verdict: ")
    state = json.loads(state_file.read_text())
    keys = sorted((r["space"], r["search_seed"], r["seed"]) for r in state["retrains"])
    assert keys == sorted((s, k, r) for s in SPACES for k in range(2) for r in range(2))  # each once
    uri = default_tracking_uri(tmp_path / "runs")
    client = MlflowClient(uri)
    for space in SPACES:  # every search ran once, none again after the kill
        for k in range(2):
            experiment = client.get_experiment_by_name(f"cmp-{space}-s{k}")
            assert len(client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'trial'")) == 1

    # Recomputed from each retrain's summary.json, paired by (search seed, retrain seed).
    tested = {}
    for space in SPACES:
        for k in range(2):
            for r in range(2):
                summary = (
                    tmp_path
                    / "runs"
                    / "comparisons"
                    / "cmp"
                    / f"cmp-{space}-s{k}"
                    / f"retrain-seed{r}"
                    / "summary.json"
                )
                tested[(space, k, r)] = json.loads(summary.read_text())["test"]["test/recall@1"]
    per_pair = [tested[("lsd", k, r)] - tested[("baseline", k, r)] for k in range(2) for r in range(2)]
    per_search = [np.mean(per_pair[2 * k : 2 * k + 2]) for k in range(2)]
    for level, values in (("retrain seeds", per_pair), ("search seeds", per_search)):
        row = next(line for line in lines if line.strip().startswith(f"Recall@1  over {len(values)} {level}"))
        mean, boot_low, boot_high, t_low, t_high = map(float, re.findall(r"[-+]\d\.\d{4}", row))
        assert mean == pytest.approx(np.mean(values), abs=1e-4)
        if np.ptp(values) > 0:
            half = scipy.stats.t.ppf(0.975, len(values) - 1) * np.std(values, ddof=1) / math.sqrt(len(values))
            assert (t_low, t_high) == pytest.approx((np.mean(values) - half, np.mean(values) + half), abs=1e-4)
        assert boot_low - 1e-4 <= np.mean(values) <= boot_high + 1e-4

    # MLflow: the comparison's parent run (differences, verdict, page) and one nested run per retrain.
    experiment = client.get_experiment_by_name("cmp")
    parent = client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'comparison'")[0]
    retrains = client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'retrain'")
    assert {r.data.tags["mlflow.parentRunId"] for r in retrains} == {parent.info.run_id}
    assert (
        len(
            {
                (r.data.tags["tune_lsd.space"], r.data.tags["tune_lsd.search_seed"], r.data.tags["tune_lsd.seed"])
                for r in retrains
            }
        )
        == 8
    )
    assert parent.data.metrics["test/recall_at_1/search/mean"] == pytest.approx(np.mean(per_search), abs=1e-9)
    assert parent.data.tags["tune_lsd.verdict"] == lines[-1]
    assert set(parent.data.tags["tune_lsd.searches"].split(",")) == {f"cmp-{s}-s{k}" for s in SPACES for k in range(2)}
    page = (tmp_path / "runs" / "reports" / "cmp" / "compare.html").read_text()
    assert lines[-1] in page.replace("&#x27;", "'") and "data:image/png;base64," in page
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "compare")] == [
        "compare/compare.html",
        "compare/forest.png",
    ]

    again = tune_lsd(*args, cwd=tmp_path)
    assert again.returncode == 2 and "a comparison named 'cmp' already exists" in again.stderr


def test_a_bad_space_or_key_is_one_line_and_leaves_nothing(tmp_path):
    unknown = tune_lsd("compare", "--name", "bad", "--spaces", "lsd,nosuchspace", cwd=tmp_path)
    wrong_key = tune_lsd("compare", "--name", "bad", "--set", "lsd.tmperature=0.5", cwd=tmp_path)
    one_space = tune_lsd("compare", "--name", "bad", "--spaces", "lsd", cwd=tmp_path)

    for result, expected in ((unknown, "nosuchspace"), (wrong_key, "lsd.tmperature"), (one_space, "--spaces")):
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and expected in errors[0], result.stderr[-2000:]
    assert not (tmp_path / "runs" / "comparisons").exists()
