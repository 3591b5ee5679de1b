"""tune_lsd/search/lifecycle.py without a search: a search's folders as Ray Tune and the trials
leave them (checkpoint folders, spool markers) and its MLflow store (a real SQLite file)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient
from trial_runs import logged_trial_run

from tune_lsd import tracking
from tune_lsd.search.lifecycle import (
    completion_record,
    prune_search,
    record_completion,
    undelivered_elsewhere,
)
from tune_lsd.search.settings import SearchSettings


def search_folders(tmp_path: Path, trial_ids: tuple[str, ...]) -> SearchSettings:
    """A search's saved settings and Ray Tune folder: each trial with two checkpoints of 1 KB
    and its result file."""
    settings = SearchSettings(name="life", runs_dir=str(tmp_path / "runs"))
    settings.settings_location.write_text(yaml.safe_dump(settings.model_dump()))
    experiment = Path(settings.experiment_location.uri)
    for index, trial_id in enumerate(trial_ids):
        trial_dir = experiment / f"DMLTrainable_{trial_id}_{index:05d}_{index}_optim.lr=0.1"
        for number in (1, 2):
            checkpoint = trial_dir / f"checkpoint_{number:06d}"
            checkpoint.mkdir(parents=True)
            (checkpoint / "trainer.pt").write_bytes(b"x" * 1024)
        (trial_dir / "result.json").write_text("{}")
    return settings


def search_run(settings: SearchSettings) -> tracking.TrackingContext:
    return tracking.start_search_run(settings.resolved_tracking_uri(), "life", {}, settings.runs_path / "mlartifacts")


def checkpoints_left(settings: SearchSettings) -> dict[str, int]:
    experiment = Path(settings.experiment_location.uri)
    return {d.name.split("_")[1]: len(list(d.glob("checkpoint_*"))) for d in experiment.iterdir() if d.is_dir()}


def test_completion_deletes_every_checkpoint_and_says_so_and_resume_then_has_nothing(tmp_path):
    settings = search_folders(tmp_path, ("aaaa", "bbbb"))
    summary = {"name": "life", "state": "completed", "trials": 2, "errored": 0, "epochs_run": 6, "wall_s": 9.0}
    lines: list[str] = []
    assert completion_record(settings) is None

    record_completion(settings, summary, search_run(settings), lines.append)

    assert checkpoints_left(settings) == {"aaaa": 0, "bbbb": 0}
    assert all((d / "result.json").exists() for d in Path(settings.experiment_location.uri).iterdir())
    assert lines == [
        "deleted 4 trial checkpoints (0 MB); the best models are in MLflow (--keep-checkpoints keeps them)"
    ]
    assert summary["checkpoints_deleted_mb"] == round(4 * 1024 / 2**20, 1)
    recorded = {key: value for key, value in summary.items() if key not in ("checkpoints_deleted_mb", "models_deleted")}
    assert completion_record(settings) == {**recorded, "registered": False}


def test_completion_keeps_the_checkpoints_when_asked(tmp_path):
    settings = search_folders(tmp_path, ("aaaa",)).model_copy(update={"keep_checkpoints": True})
    lines: list[str] = []
    record_completion(settings, {"name": "life", "state": "completed", "trials": 1, "errored": 0, "epochs_run": 3,
                                 "wall_s": 1.0}, search_run(settings), lines.append)  # fmt: skip
    assert checkpoints_left(settings) == {"aaaa": 2} and lines == []
    assert completion_record(settings) is not None


def test_prune_of_a_search_that_may_resume_keeps_the_checkpoints_of_unfinished_trials(tmp_path):
    settings = search_folders(tmp_path, ("done", "stop", "busy"))
    context = search_run(settings)
    recorder = tracking.search_recorder(context)
    for trial_id in ("done", "stop", "busy"):
        tracker = tracking.TrialTracker(context, trial_id, f"DMLTrainable_{trial_id}", {}, {}, node_id="n")
        assert tracker.close() == 0
    recorder.trial_ended("done", "completed")
    recorder.trial_ended("stop", "stopped early")
    assert recorder.close() == 0
    lines: list[str] = []

    folders, freed = prune_search("life", settings.runs_dir, lines.append)

    assert checkpoints_left(settings) == {"done": 0, "stop": 0, "busy": 2}  # busy may still be resumed
    assert (folders, freed) == (4, 4 * 1024)
    assert lines == ["search 'life': deleted 4 checkpoints of 2 finished trials, 0 MB freed"]


def test_completion_and_prune_keep_only_the_best_trials_models(tmp_path):
    settings = search_folders(tmp_path, ()).model_copy(update={"keep_models": 2})
    context = search_run(settings)
    values = {"aaaa": 0.4, "bbbb": 0.9, "cccc": 0.6, "dddd": 0.2}
    runs = {t: logged_trial_run(context, t, 1, "completed", best=v, model_bytes=2**20) for t, v in values.items()}
    summary = {"name": "life", "state": "completed", "trials": 4, "errored": 0, "epochs_run": 4, "wall_s": 1.0}
    lines: list[str] = []

    record_completion(settings, summary, context, lines.append)

    client = MlflowClient(settings.resolved_tracking_uri())
    with_model = {t for t, run_id in runs.items() if client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)}
    assert with_model == {"bbbb", "cccc"} and summary["models_deleted"] == 2
    assert lines[0] == (
        "MLflow: deleted the models of 2 trials beyond the best 2 (2 MB); their metrics and configs stay "
        "(--keep-models N)"
    )
    lines.clear()
    prune_search("life", settings.runs_dir, lines.append, keep_models=1)  # an older search, pruned further
    assert {t for t, run_id in runs.items() if client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)} == {"bbbb"}
    assert lines[0].startswith("MLflow: deleted the models of 1 trial beyond the best 1 (1 MB)")


def test_spool_markers_of_this_node_go_once_delivered_and_other_nodes_are_named(tmp_path):
    settings = search_folders(tmp_path, ())
    kept_spool = tmp_path / "worker-spools" / "cccc"
    kept_spool.mkdir(parents=True)
    markers = {
        "aaaa": {"node_id": "driver", "spool": str(tmp_path / "gone"), "node_ip": "10.0.0.1"},  # delivered
        "bbbb": {"node_id": "driver", "spool": str(kept_spool), "node_ip": "10.0.0.1"},  # not yet
        "cccc": {"node_id": "worker7abcdef", "spool": str(kept_spool), "node_ip": "10.0.0.7"},
        "dddd": {"node_id": "worker7abcdef", "spool": str(kept_spool), "node_ip": "10.0.0.7"},
    }
    for trial_id, marker in markers.items():
        (settings.undelivered_location / f"{trial_id}.json").write_text(json.dumps({"trial_id": trial_id, **marker}))
    lines: list[str] = []

    assert undelivered_elsewhere(settings, "driver", lines.append) == 2

    assert sorted(settings.undelivered_location.names(".json")) == ["bbbb.json", "cccc.json", "dddd.json"]
    assert lines == [
        f"warning: node 10.0.0.7 (worker7a) keeps tracking records of 2 trials (cccc, dddd) that "
        f"{settings.resolved_tracking_uri()} did not take, in {kept_spool.parent}; once it is back, run on that "
        "node: tune-lsd sync life"
    ]
