"""A trial's MLflow run as a trial process writes it, for tests of what reads or ends runs."""

from __future__ import annotations

from pathlib import Path

from tune_lsd import tracking


def logged_trial_run(
    context: tracking.TrackingContext,
    trial_id: str,
    epochs: int,
    state: str | None = None,
    best: float | None = None,
    model_bytes: int = 0,
) -> str:
    """A trial's run as a trial process writes it (``epochs`` epochs logged, the last with
    ``best/val/recall@1`` = ``best`` if given, then a model file of ``model_bytes`` if any),
    optionally ended."""
    tracker = tracking.TrialTracker(context, trial_id, f"DMLTrainable_{trial_id}", {}, {"optim.lr": 0.1}, node_id="n")
    for epoch in range(1, epochs + 1):
        metrics = {"epoch": epoch, "val/recall@1": 0.1 * epoch}
        if best is not None and epoch == epochs:
            metrics["best/val/recall@1"] = best
        tracker.log_metrics(metrics, step=epoch)

    def write_model(folder: Path) -> None:
        (folder / tracking.MODEL_FILE).write_bytes(b"m" * model_bytes)

    if model_bytes:
        tracker.log_checkpoint(write_model)
    assert tracker.close() == 0
    if state is not None:
        recorder = tracking.SearchRecorder(context)
        recorder.trial_ended(trial_id, state)
        assert recorder.close() == 0
    assert tracker.run_id is not None
    return tracker.run_id
