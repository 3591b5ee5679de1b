"""The names tune_lsd gives things in MLflow: tags, artifact paths and metric keys.

MLflow metric names may not contain ``@``: ``val/recall@1`` is logged as ``val/recall_at_1``
(see :func:`mlflow_key`).
"""

from __future__ import annotations

from typing import Any

SEARCH_TAG = "tune_lsd.search"  # "parent" on a search's run, "trial" on a trial's run
TRIAL_ID_TAG = "ray.trial_id"
SAMPLED_TAG = "tune_lsd.sampled"  # JSON of the values the searcher chose for this trial
# trials: completed | stopped early | errored | running | lost; the parent run: running | completed | ...
STATE_TAG = "tune_lsd.state"
RAY_EXPERIMENT_TAG = (
    "tune_lsd.ray_experiment"  # the Ray Tune experiment that ran the trial (a search or an --extend round)
)
NODES_TAG = "tune_lsd.nodes"  # Ray node ids the trial ran on, in order (more than one after a restart)
ERROR_TAG = "tune_lsd.error"  # an errored trial's last traceback line
PARENT_TAG = "mlflow.parentRunId"
CHECKPOINT_DIR = "checkpoint"  # a trial's best model file (MODEL_FILE) as a run artifact
MODEL_TAG = "tune_lsd.model"  # "uploaded" once a trial's model is in MLflow; "deleted" (not among --keep-models)
MODEL_FILE = "model.pt"
SPACE_ARTIFACT = "search_space.yaml"  # the search space, on the parent run
MODEL_DIR = "model"  # the logged MLflow model's name on the best trial's run
MODEL_METADATA_KEY = "tune_lsd"  # in a logged model's metadata: marks a tune_lsd embedding model


def mlflow_key(name: str) -> str:
    """MLflow-safe metric name: ``val/recall@1`` -> ``val/recall_at_1``."""
    return name.replace("@", "_at_")


def param_value(value: Any) -> str:
    """A value as an MLflow param (MLflow refuses params longer than 6000 characters)."""
    return str(value)[:6000]
