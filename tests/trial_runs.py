"""A trial's MLflow run as a trial process writes it, for tests of what reads or ends runs."""

from __future__ import annotations

from tune_lsd import tracking


def logged_trial_run(context: tracking.TrackingContext, trial_id: str, epochs: int, state: str | None = None) -> str:
    """A trial's run as a trial process writes it (``epochs`` epochs logged), optionally ended."""
    tracker = tracking.TrialTracker(context, trial_id, f"DMLTrainable_{trial_id}", {}, {"optim.lr": 0.1}, node_id="n")
    for epoch in range(1, epochs + 1):
        tracker.log_metrics({"epoch": epoch, "val/recall@1": 0.1 * epoch}, step=epoch)
    assert tracker.close() == 0
    if state is not None:
        recorder = tracking.SearchRecorder(context)
        recorder.trial_ended(trial_id, state)
        assert recorder.close() == 0
    assert tracker.run_id is not None
    return tracker.run_id
