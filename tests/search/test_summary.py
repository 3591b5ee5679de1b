"""tune_lsd/search/summary.py and champion.py without a search: a real MLflow SQLite store with
trial runs as trial processes write them (one with a real model file), real Ray Tune results."""

from __future__ import annotations

import shutil

import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Result

from trainables.finished import record_finished
from tune_lsd import tracking
from tune_lsd.search.champion import CHAMPION, SEARCH_BEST, best_and_champion
from tune_lsd.search.settings import SearchSettings
from tune_lsd.search.summary import print_summary, summarise

METRIC = "val/recall@1"


class Results(list):
    """The parts of Ray Tune's ResultGrid a summary reads: its results and two counts."""

    def __init__(self, results: list[Result], terminated: int) -> None:
        super().__init__(results)
        self.num_terminated = terminated
        self.num_errors = sum(r.error is not None for r in results)


def result(trial_id: str, epochs: int, error: Exception | None = None) -> Result:
    return Result(metrics={"trial_id": trial_id, "training_iteration": epochs}, checkpoint=None, error=error, path="")


@pytest.fixture
def search(tmp_path, trained_model):
    """A search of two trial runs in MLflow (their best values 0.4 and 0.7; the better one with
    a real model file), its settings and a recorder."""
    settings = SearchSettings(name="sum", runs_dir=str(tmp_path / "runs"), num_samples=3)
    uri = settings.resolved_tracking_uri()
    context = tracking.start_search_run(uri, "sum", {"space": "lsd"}, settings.runs_path / "mlartifacts")
    _, model_file = trained_model
    for trial_id, best, lr in (("worse", 0.4, 0.1), ("better", 0.7, 0.01)):
        tracker = tracking.TrialTracker(context, trial_id, f"DMLTrainable_{trial_id}", {}, {"optim.lr": lr}, "n")
        tracker.log_metrics({"epoch": 1, METRIC: best, f"best/{METRIC}": best}, step=1)
        if trial_id == "better":
            tracker.log_checkpoint(lambda folder: shutil.copy(model_file, folder / tracking.MODEL_FILE))
        assert tracker.close() == 0
    recorder = tracking.search_recorder(context)
    yield settings, context, recorder
    recorder.close(timeout_s=5)  # its delivery thread must not outlive the test's store


def test_the_best_trial_is_registered_as_champion_and_the_summary_says_how_to_load_it(search):
    settings, context, recorder = search
    for trial_id in ("worse", "better"):
        record_finished(settings.finished_location, trial_id, {"epoch": 1})
    results = Results([result("worse", 1), result("better", 1), result("failed", 0, ValueError("boom\nreason"))], 3)

    summary = summarise(settings, results, context, recorder, wall_s=12.34)

    assert summary["state"] == "completed with errors" and summary["first_error"] == "reason"
    assert (summary["trials"], summary["errored"], summary["epochs_run"]) == (3, 1, 2)
    assert summary["best_trial"] == "DMLTrainable_better" and summary["best_value"] == 0.7
    assert summary["best_params"] == {"optim.lr": 0.01} and summary["registered_version"] == 1
    client = MlflowClient(context.tracking_uri)
    for alias in (SEARCH_BEST, CHAMPION):
        version = client.get_model_version_by_alias("sum-best", alias)
        assert version.run_id == summary["best_run_id"]
    assert recorder.close() == 0
    parent = tracking.search_parent_run(context.tracking_uri, "sum")
    assert parent.data.tags[tracking.STATE_TAG] == "completed with errors"
    assert parent.data.metrics[tracking.mlflow_key(f"best/{METRIC}")] == 0.7

    lines: list[str] = []
    print_summary(summary, lines.append)
    text = "\n".join(lines)
    assert "search 'sum' completed with errors: 3 trials (1 errored), 2 epochs in 12.3 s" in text
    assert "best trial DMLTrainable_better: 0.7000\n  optim.lr = 0.01" in text
    assert "model = mlflow.pyfunc.load_model('models:/sum-best@champion')" in text
    assert lines[-1].startswith("next: tune-lsd finalize sum")


def test_a_trial_that_neither_errored_nor_finished_makes_the_search_interrupted(search):
    settings, context, recorder = search
    record_finished(settings.finished_location, "worse", {"epoch": 1})  # "better" was running at Ctrl-C
    summary = summarise(settings, Results([result("worse", 1), result("better", 1)], 2), context, recorder, 1.0)
    assert summary["state"] == "interrupted"
    # too few trials is not complete either, even when every one of them ended
    record_finished(settings.finished_location, "better", {"epoch": 1})
    summary = summarise(settings, Results([result("worse", 1), result("better", 1)], 2), context, recorder, 1.0)
    assert summary["state"] == "interrupted"  # 2 of --num-samples 3


def test_without_a_trial_model_nothing_is_registered_and_the_summary_warns(search):
    settings, context, recorder = search
    run_id = tracking.best_trial_run(context.tracking_uri, "sum", METRIC).info.run_id
    MlflowClient(context.tracking_uri).delete_run(run_id)  # the best run is gone: the next has no model
    found = best_and_champion(settings, context)
    assert found["best_trial"] == "DMLTrainable_worse" and "registered_version" not in found
    lines: list[str] = []
    summary = {"name": "sum", "state": "completed", "trials": 2, "errored": 0, "epochs_run": 2, "wall_s": 1.0}
    print_summary({**summary, "tracking_uri": "x", "ray_results": "y", **found}, lines.append)
    assert any(line.startswith("warning: the best model was not registered in MLflow: ") for line in lines)
