"""tune_lsd/tracking/delivery.py and runs.py against a real MLflow SQLite store: trial runs nested
in the search's run, concurrent trials, restarted trials, trial states."""

from __future__ import annotations

import json
import time
from concurrent.futures import ProcessPoolExecutor

from mlflow.tracking import MlflowClient

from tune_lsd import tracking


def log_a_trial(args) -> str:
    uri, context, index, epochs = args
    tracker = tracking.TrialTracker(
        context, f"trial{index}", f"trial_{index}", {"lsd.weight": index}, {"lsd.weight": index}, node_id="node-a"
    )
    for epoch in range(1, epochs + 1):
        tracker.log_metrics(
            {"val/recall@1": index + epoch / 100, "train/loss": 1.0 / epoch, "epoch": epoch}, step=epoch
        )
    assert tracker.close() == 0
    assert tracker.run_id is not None
    return tracker.run_id


def test_concurrent_trials_lose_no_metric(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "concurrent", {"space": "x"}, tmp_path / "artifacts")
    with ProcessPoolExecutor(4) as pool:
        run_ids = list(pool.map(log_a_trial, [(uri, context, i, 40) for i in range(4)]))
    client = MlflowClient(uri)
    for run_id in run_ids:
        history = client.get_metric_history(run_id, "val/recall_at_1")
        assert sorted(m.step for m in history) == list(range(1, 41))
        assert client.get_run(run_id).data.tags["mlflow.parentRunId"] == context.parent_run_id
    assert len(tracking.trial_runs(uri, "concurrent")) == 4


def test_restarted_trial_reuses_its_run_and_states_are_recorded(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "states", {"space": "x"}, tmp_path / "artifacts")
    first = tracking.TrialTracker(context, "abc", "trial_abc", {}, {"optim.lr": 0.1}, node_id="node-a")
    first.log_metrics({"best/val/recall@1": 0.4}, step=1)
    assert first.close() == 0
    handed_on = tracking.TrialTracker(context, "abc", "trial_abc", {}, {"optim.lr": 0.1}, node_id="node-c")
    assert handed_on.close() == 0  # set up there, then handed to another actor before it trained: not a node
    again = tracking.TrialTracker(context, "abc", "trial_abc", {}, {"optim.lr": 0.1}, node_id="node-b")
    assert again.flush() == 0 and first.run_id == again.run_id
    again.log_metrics({"best/val/recall@1": 0.5}, step=2)
    assert again.close() == 0
    assert MlflowClient(uri).get_run(first.run_id).data.tags[tracking.NODES_TAG] == "node-a,node-b"
    recorder = tracking.SearchRecorder(context)
    recorder.trial_ended("abc", "errored", "NonFiniteLossError: training loss is nan")
    recorder.trial_ended("never-started", "errored", "no run: skipped", has_run=False)
    assert recorder.close() == 0
    run = MlflowClient(uri).get_run(first.run_id)
    assert run.info.status == "FAILED" and run.data.tags[tracking.STATE_TAG] == "errored"
    assert "loss is nan" in run.data.tags["tune_lsd.error"]
    assert json.loads(run.data.tags[tracking.SAMPLED_TAG]) == {"optim.lr": 0.1}
    # a resumed search reopens the same parent run
    assert tracking.start_search_run(uri, "states", {}, tmp_path / "artifacts").parent_run_id == context.parent_run_id
    assert tracking.best_trial_run(uri, "states", "val/recall@1").info.run_id == first.run_id


def test_a_restarted_trial_that_trains_logged_epochs_again_logs_each_epoch_once(tmp_path):
    """A driver killed after a trial logged epochs 1-2 but before Ray Tune recorded its second
    checkpoint: the restarted trial trains epoch 2 again; its run keeps one point per epoch."""
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "again", {"space": "x"}, tmp_path / "artifacts")
    first = tracking.TrialTracker(context, "abc", "trial_abc", {}, {}, node_id="node-a")
    for epoch in (1, 2):
        first.log_metrics({"epoch": epoch, "val/recall@1": epoch / 10}, step=epoch)
    assert first.close() == 0  # (the kill: this process is gone; its records had been delivered)
    restarted = tracking.TrialTracker(context, "abc", "trial_abc", {}, {}, node_id="node-a")
    for epoch in (2, 3):  # from the checkpoint of epoch 1
        restarted.log_metrics({"epoch": epoch, "val/recall@1": epoch / 10 + 0.5}, step=epoch)
    assert restarted.close() == 0
    history = MlflowClient(uri).get_metric_history(first.run_id, "val/recall_at_1")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.1), (2, 0.2), (3, 0.8)]


def test_a_spool_left_without_its_state_by_an_older_interrupted_removal_is_removed_not_fatal(tmp_path):
    """Before spools were renamed aside, a kill during their deletion could leave the records
    file without state.json (no context): --resume then stopped with a KeyError."""
    broken = tmp_path / "spool" / "trial_x"
    broken.mkdir(parents=True)
    (broken / "records.jsonl").write_text('{"op":"metrics","metrics":{"a":1.0},"step":1}\n')
    lines: list[str] = []

    delivered = tracking.deliver_spools(tmp_path / "spool", log=lines.append)

    assert delivered == 0 and not (tmp_path / "spool").exists()
    assert lines == ["removed trial_x: a delivered spool whose removal was interrupted"]


def open_and_end_a_trial(args) -> None:
    """What an actor Ray Tune stops before its trial's first epoch does: open, then end."""
    context, trial_id, ends_after_s = args
    tracker = tracking.TrialTracker(context, trial_id, f"trial_{trial_id}", {}, {}, node_id="node-a")
    time.sleep(ends_after_s)
    assert tracker.close() == 0


def test_a_trial_whose_first_actor_is_stopped_while_another_runs_it_loses_nothing(tmp_path):
    """Ray Tune can start a trial in a new actor, hand it to a reused one, and stop the first:
    the stopped actor's end must not remove the spool of the actor the trial goes on in (it did:
    the trial errored with FileNotFoundError on its next record)."""
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "handed", {"space": "x"}, tmp_path / "spool-root")
    context = tracking.TrackingContext(uri, context.experiment_id, context.parent_run_id, str(tmp_path / "spool"))
    with ProcessPoolExecutor(max_workers=2) as actors:
        first = actors.submit(open_and_end_a_trial, (context, "t1", 2.0))  # set up first, stopped later
        time.sleep(1.0)
        running = tracking.TrialTracker(context, "t1", "trial_t1", {}, {}, node_id="node-b")
        first.result()
    for epoch in (1, 2):
        running.log_metrics({"epoch": epoch, "val/recall@1": 0.1 * epoch}, step=epoch)
    assert running.close() == 0
    runs = tracking.trial_runs(uri, "handed")
    assert len(runs) == 1
    steps = [m.step for m in MlflowClient(uri).get_metric_history(runs[0].info.run_id, "epoch")]
    assert steps == [1, 2]
