"""tune_lsd/tracking/runs.py against a real MLflow SQLite store: the runs of trials Ray Tune lost
when a driver was killed (started after its last saved state) are deleted, and nothing else is."""

from __future__ import annotations

import dataclasses

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from trial_runs import logged_trial_run

from tune_lsd import tracking


def test_only_runs_of_this_ray_experiment_that_ray_does_not_know_are_deleted(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "kills", {"space": "x"}, tmp_path / "artifacts", ray_experiment="kills")
    known_running = logged_trial_run(context, "known", 2)  # interrupted: Ray resumes it
    known_done = logged_trial_run(context, "done", 3, "completed")
    lost = logged_trial_run(context, "lost", 1)  # opened its run, then the driver died before Ray saved it
    # started and finished between two saves: the resumed search ran another trial in its place
    lost_but_ended = logged_trial_run(context, "ended", 3, "completed")
    # an --extend round of the same search is another Ray experiment: its trials are not this one's
    extension = dataclasses.replace(context, ray_experiment="kills.ext-4")
    other_round = logged_trial_run(extension, "round2", 1)

    discarded = tracking.discard_lost_trial_runs(context, {"known", "done"})

    assert sorted(discarded) == [("ended", 3), ("lost", 1)]
    client = MlflowClient(uri)
    for run_id in (lost, lost_but_ended):
        gone = client.get_run(run_id)
        assert gone.info.lifecycle_stage == "deleted" and gone.info.status == "KILLED"
        assert gone.data.tags[tracking.STATE_TAG] == "lost"
    kept = {run.info.run_id for run in tracking.trial_runs(uri, "kills")}
    assert kept == {known_running, known_done, other_round}
    assert client.get_run(other_round).data.tags[tracking.RAY_EXPERIMENT_TAG] == "kills.ext-4"
    # deleted, not destroyed: `mlflow runs restore` brings it back
    assert lost in {
        r.info.run_id for r in client.search_runs([context.experiment_id], run_view_type=ViewType.DELETED_ONLY)
    }
    assert tracking.discard_lost_trial_runs(context, {"known", "done"}) == []  # nothing left to discard


def test_runs_of_a_search_started_before_the_tag_are_never_deleted(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    untagged = tracking.start_search_run(uri, "old", {"space": "x"}, tmp_path / "artifacts")
    logged_trial_run(untagged, "a", 1)
    resumed = dataclasses.replace(untagged, ray_experiment="old")
    assert tracking.discard_lost_trial_runs(resumed, set()) == []
    assert tracking.discard_lost_trial_runs(untagged, set()) == []
    assert len(tracking.trial_runs(uri, "old")) == 1


def test_an_unreachable_server_gives_one_tracking_error_after_two_tries(monkeypatch):
    import pytest

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # as the CLI sets (prefer_own_retries)
    context = tracking.TrackingContext("http://127.0.0.1:9", "1", "parent", ray_experiment="kills")
    with pytest.raises(tracking.TrackingError, match="MLflow search_runs failed after 2 tries"):
        tracking.discard_lost_trial_runs(context, set())
