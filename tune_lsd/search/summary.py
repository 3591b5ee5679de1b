"""What a search reports when its fit returns: its state, counts, the best trial, printed."""

from __future__ import annotations

from typing import Any

from tune_lsd import tracking
from tune_lsd.search.champion import best_and_champion
from tune_lsd.search.settings import SearchSettings


def summarise(
    settings: SearchSettings,
    results,
    context: tracking.TrackingContext,
    recorder: tracking.SearchRecorder,
    wall_s: float,
) -> dict[str, Any]:
    """The summary of a fit's ``results`` (registering the champion on the way) and the search's
    state: completed, completed with errors, or interrupted (``--resume`` continues it)."""
    epochs_run = [r.metrics.get("training_iteration", 0) for r in results if r.metrics]
    errors = [r for r in results if r.error is not None]
    summary: dict[str, Any] = {
        "name": settings.name,
        "trials": len(results),
        "errored": len(errors),
        "earlier_trials": settings.earlier_trials,
        "epochs_run": sum(epochs_run),
        "wall_s": round(wall_s, 1),
        "tracking_uri": settings.resolved_tracking_uri(),
        "ray_results": settings.experiment_location.uri,
        "first_error": str(errors[0].error).strip().splitlines()[-1] if errors else None,
    }
    summary.update(best_and_champion(settings, context))
    # Ray Tune returns normally from an interrupted fit (Ctrl-C), its running trials marked
    # terminated: a trial ended only if it errored or left its final result (trainables.dml).
    finished = {name.removesuffix(".json") for name in settings.finished_location.names(".json")}
    ended = all(r.error is not None or (r.metrics or {}).get("trial_id") in finished for r in results)
    if settings.time_budget_s is not None:  # the budget stops trials where they are: that is their end
        ended = results.num_terminated + results.num_errors == len(results)
    complete = ended and (len(results) >= settings.num_samples or settings.time_budget_s is not None)
    state = ("completed" if not errors else "completed with errors") if complete else "interrupted"
    recorder.search_ended(
        state,
        {
            "best/" + settings.metric: summary.get("best_value", 0.0),
            "trials": len(results),
            "errored_trials": len(errors),
        },
    )
    summary["state"] = state
    return summary


def print_summary(summary: dict[str, Any], log) -> None:
    """The search's last lines: counts, the best trial and its values, where to look next."""
    earlier = summary.get("earlier_trials", 0)
    trials = (
        f"{summary['trials']} more trials ({summary['trials'] + earlier} in all)"
        if earlier
        else f"{summary['trials']} trials"
    )
    log(
        f"\nsearch {summary['name']!r} {summary['state']}: {trials} "
        f"({summary['errored']} errored), {summary['epochs_run']} epochs in {summary['wall_s']} s"
    )
    if "best_value" in summary:
        log(f"best trial {summary['best_trial']}: {summary['best_value']:.4f}")
        for key, value in sorted(summary["best_params"].items()):
            log(f"  {key} = {value}")
    log(f"MLflow: {summary['tracking_uri']}    Ray results: {summary['ray_results']}")
    if "registered_version" in summary:
        log(
            f"the best trial's model (@search-best, @champion until finalize), in Python "
            f"(needs torch, numpy and mlflow; not tune_lsd):\n"
            f"  import mlflow\n"
            f"  mlflow.set_tracking_uri({summary['tracking_uri']!r})\n"
            f"  model = mlflow.pyfunc.load_model('models:/{summary['registered_model']}@champion')"
            f"  # model.predict(uint8 images N x H x W x C) -> embeddings"
        )
    elif "registry_error" in summary:
        log(f"warning: the best model was not registered in MLflow: {summary['registry_error']}")
    log(
        f"next: tune-lsd finalize {summary['name']}   (retrains the best config on all training classes, tests it "
        "once and registers that model as the champion)"
    )
