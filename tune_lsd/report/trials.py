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


@dataclass
class TrialSummary:
    """One trial as its MLflow child run recorded it."""

    name: str
    run_id: str
    state: str
    sampled: dict[str, Any]
    best: float | None  # best value of the metric over its epochs
    curve: list[tuple[int, float]]  # (epoch, metric) points


def load_trials(tracking_uri: str, search: str, metric: str, mode: str = "max") -> list[TrialSummary]:
    """Every trial of ``search`` with its curve, best first (trials without a result last)."""
    best_key = tracking.mlflow_key(f"best/{metric}")
    trials = [
        TrialSummary(
            name=run.info.run_name,
            run_id=run.info.run_id,
            state=run.data.tags.get(tracking.STATE_TAG, "running"),
            sampled=json.loads(run.data.tags.get(tracking.SAMPLED_TAG, "{}")),
            best=run.data.metrics.get(best_key),
            curve=[(step, value) for step, value, _ in tracking.metric_history(tracking_uri, run.info.run_id, metric)],
        )
        for run in tracking.trial_runs(tracking_uri, search)
    ]
    sign = -1 if mode == "max" else 1
    return sorted(trials, key=lambda t: (t.best is None, sign * (t.best or 0.0), t.name))


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
