"""The search's best trial, and its model registered as ``<name>-best@champion``."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from tune_lsd import tracking
from tune_lsd.errors import first_line
from tune_lsd.search.settings import SearchSettings

SEARCH_BEST = "search-best"  # the search's best trial, as trained in the search
CHAMPION = "champion"  # the model to use: the best trial, until `tune-lsd finalize` registers the final model


def best_and_champion(settings: SearchSettings, context: tracking.TrackingContext) -> dict[str, Any]:
    """The best trial in MLflow and its model registered as ``<name>-best@champion`` (empty
    when MLflow has no trial results, e.g. the tracking server was down)."""
    try:
        tracking.check_tracking_uri(settings.resolved_tracking_uri(), timeout_s=5)
        best = tracking.best_trial_run(settings.resolved_tracking_uri(), settings.name, settings.metric, settings.mode)
    except tracking.TrackingError:
        return {}
    key = tracking.mlflow_key(f"best/{settings.metric}")
    found = {
        "best_trial": best.info.run_name,
        "best_run_id": best.info.run_id,
        "best_value": best.data.metrics[key],
        "best_params": json.loads(best.data.tags.get(tracking.SAMPLED_TAG, "{}")),
        "registered_model": f"{settings.name}-best",
    }
    try:
        found["registered_version"] = log_champion(context, best.info.run_id, found["registered_model"])
    except Exception as error:  # the registry is a convenience: never lose a finished search over it
        found["registry_error"] = first_line(error)
    return found


def log_champion(context: tracking.TrackingContext, run_id: str, model_name: str) -> int:
    """The best trial's model as an MLflow pyfunc model, registered as ``model_name`` with the
    aliases ``search-best`` and ``champion`` (``tune-lsd finalize`` moves ``champion`` to the
    final model)."""
    from tune_lsd.engine import load_model_state

    with tempfile.TemporaryDirectory() as folder:
        snapshot = load_model_state(tracking.download_trial_model(context.tracking_uri, run_id, Path(folder)))
        return register_model(context, run_id, model_name, snapshot, Path(folder), aliases=(SEARCH_BEST, CHAMPION))


def register_model(
    context: tracking.TrackingContext,
    run_id: str,
    model_name: str,
    snapshot: dict[str, Any],
    folder: Path,
    aliases: tuple[str, ...],
) -> int:
    """``snapshot`` (config + student weights) as the pyfunc model of run ``run_id``, a new
    version of ``model_name`` with ``aliases``; its files are written in ``folder``."""
    from tune_lsd import serving  # torch and timm: imported in a thread while the trials trained

    files, description = serving.write_model_files(snapshot, folder / "model")
    return tracking.log_best_model(
        context,
        run_id,
        model_name,
        serving.MODEL_CODE_FILE,
        files,
        serving.example_images(snapshot),
        description,
        aliases=aliases,
    )
