"""What a report reads from MLflow: each trial of a search (its sampled values, best value and
learning curve), those trials as an Optuna study for Optuna's plots, and the searches of a
store (`tune-lsd ls`)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import optuna

from search_spaces.loader import ParamSpec
from tune_lsd import tracking

# The learning curves are read for the best this many trials (one request each; a plot of
# thousands of curves shows no more than of these).
CURVES = 200


@dataclass
class TrialSummary:
    """One trial as its MLflow child run recorded it."""

    name: str
    run_id: str
    state: str
    sampled: dict[str, Any]
    best: float | None  # best value of the metric over its epochs
    epochs: int  # epochs it reported
    curve: list[tuple[int, float]]  # (epoch, metric) points; read for the best CURVES trials only


def load_trials(
    tracking_uri: str, search: str, metric: str, mode: str = "max", curves: int = CURVES
) -> list[TrialSummary]:
    """Every trial of ``search``, best first (trials without a result last), with the learning
    curves of the best ``curves``."""
    best_key = tracking.mlflow_key(f"best/{metric}")
    trials = [
        TrialSummary(
            name=run.info.run_name,
            run_id=run.info.run_id,
            state=run.data.tags.get(tracking.STATE_TAG, "running"),
            sampled=json.loads(run.data.tags.get(tracking.SAMPLED_TAG, "{}")),
            best=run.data.metrics.get(best_key),
            epochs=int(run.data.metrics.get("epoch", 0)),
            curve=[],
        )
        for run in tracking.trial_runs(tracking_uri, search)
    ]
    sign = -1 if mode == "max" else 1
    trials.sort(key=lambda t: (t.best is None, sign * (t.best or 0.0), t.name))
    for trial in trials[:curves]:
        trial.curve = [(step, value) for step, value, _ in tracking.metric_history(tracking_uri, trial.run_id, metric)]
    return trials


def optuna_study(trials: list[TrialSummary], params: dict[str, ParamSpec], mode: str) -> optuna.Study:
    """The finished trials as an Optuna study (its plots and importance evaluators work on it)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    for trial in trials:
        if trial.best is None:
            continue
        sampled = {k: v for k, v in trial.sampled.items() if k in params and v is not None}
        study.add_trial(
            optuna.trial.create_trial(
                params=sampled, distributions={k: params[k].optuna_distribution() for k in sampled}, value=trial.best
            )
        )
    return study


# --- plots -----------------------------------------------------------------------------------


def list_searches(tracking_uri: str, metric: str = "val/recall@1") -> list[dict[str, Any]]:
    """One row per search in the store, newest first: name, state, trials (and errored), best metric."""
    best_key = tracking.mlflow_key(f"best/{metric}")
    rows = []
    for parent in tracking.search_parent_runs(tracking_uri):
        trials = tracking.trial_runs(tracking_uri, parent.info.run_name)
        values = [t.data.metrics[best_key] for t in trials if best_key in t.data.metrics]
        rows.append(
            {
                "name": parent.info.run_name,
                "state": parent.data.tags.get(tracking.STATE_TAG, "running"),
                "trials": len(trials),
                "errored": sum(t.data.tags.get(tracking.STATE_TAG) == "errored" for t in trials),
                "best": max(values) if values else None,
                "started_ms": parent.info.start_time,
                "space": parent.data.params.get("space", ""),
            }
        )
    return rows
