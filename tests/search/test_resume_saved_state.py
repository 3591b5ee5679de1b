"""A search saved by an older tune_lsd still resumes (tune_lsd/search/__init__.py keeps its names).

``saved_before_layout/`` is what tune_lsd left when its search code was one module,
``tune_lsd/search.py`` (commit 32e14a4): a 3-trial search (TPE + FIFO, 3 epochs, timm's tiny
``test_efficientnet``) whose driver was SIGKILLed with one trial finished and the second one
epoch in, with its checkpoint. Ray Tune had pickled the searcher and the callbacks under the
old module paths (``tune_lsd.search.TrialCountCallback``, ``tune_lsd.tracking.TrackingContext``)
and the paths of the machine it ran on; the MLflow store and spools were not kept.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tune_lsd.tracking import STATE_TAG, TRIAL_ID_TAG, default_tracking_uri

pytestmark = pytest.mark.slow
SAVED = Path(__file__).parent / "saved_before_layout"
NAME = "before-layout"
FINISHED, INTERRUPTED = "cf2fd1b4", "a3920374"  # the trial that had finished, the one killed mid-way
# `tune-lsd ARGS` whose first read of Ray's saved state fails as when the object store is down.
STORE_DOWN_AT_FIRST_READ = """
import sys
import ray.tune.execution.tune_controller as controller
from tune_lsd.cli import run
find, reads = controller._find_newest_experiment_checkpoint, []
def flaky(*args, **kwargs):
    reads.append(1)
    if len(reads) == 1:
        raise OSError("Could not connect to server: AWS Error NETWORK_CONNECTION during ListObjectsV2 operation")
    return find(*args, **kwargs)
controller._find_newest_experiment_checkpoint = flaky
run()
"""


def reported_epochs(experiment: Path) -> dict[str, list[int]]:
    """Each trial's trained epochs, in order (a finished trial's result replayed is not training)."""
    found = {}
    for path in experiment.glob("*/result.json"):
        results = [json.loads(line) for line in path.read_text().splitlines() if line]
        found[path.parent.name.split("_")[1]] = [r["epoch"] for r in results if not r.get("replayed")]
    return found


def test_the_state_is_saved_under_the_old_module_names():
    pickled = (SAVED / "ray" / NAME / "tuner.pkl").read_bytes()
    for name in (
        b"TrialCountCallback",
        b"TrialStateCallback",
        b"ProgressCallback",
        b"ResumableOptunaSearch",
        b"TrialCountedSearch",
        b"TrackingContext",
    ):
        assert name in pickled
    assert b"tune_lsd.search\x94" in pickled and b"tune_lsd.tracking\x94" in pickled  # module names, pickle protocol 5
    assert b"tune_lsd.search.callbacks" not in pickled and b"tune_lsd.tracking.store" not in pickled


def test_a_search_saved_before_the_layout_resumes_elsewhere_through_a_failed_read_and_ends_with_its_trials(tmp_path):
    runs = tmp_path / "runs"
    for folder in ("ray", "searches"):
        shutil.copytree(SAVED / folder, runs / folder)
    before = reported_epochs(runs / "ray" / NAME)
    assert before == {FINISHED: [1, 2, 3], INTERRUPTED: [1]}

    # The storage does not answer Ray Tune's first read of the saved state (Ray would start the
    # search afresh, with no trials): the driver restores again once the storage answers.
    resumed = subprocess.run(
        [sys.executable, "-c", STORE_DOWN_AT_FIRST_READ, "search", "--resume", NAME],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"search {NAME!r} completed: 3 trials (0 errored)" in resumed.stdout, resumed.stdout[-3000:]
    assert resumed.stdout.count("Ray Tune could not read the search's saved state: Could not connect") == 1
    assert "restoring it again once the storage answers" in resumed.stdout and "deleted the run" not in resumed.stdout

    after = reported_epochs(runs / "ray" / NAME)
    assert len(after) == 3 and all(epochs == [1, 2, 3] for epochs in after.values()), after
    assert after[FINISHED] == before[FINISHED]  # not trained again
    assert (runs / "searches" / NAME / "completed.json").is_file()
    # The restored callbacks recorded into this folder's store (not the saved machine's paths):
    # the two trials that ran here have runs whose final state the driver's callback set.
    client = MlflowClient(default_tracking_uri(runs))
    experiment = client.get_experiment_by_name(NAME)
    trials = client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'trial'")
    states = {run.data.tags[TRIAL_ID_TAG]: run.data.tags[STATE_TAG] for run in trials}
    assert set(states) == set(after) - {FINISHED} and set(states.values()) == {"completed"}, states
