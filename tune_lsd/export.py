"""Best trial -> a complete YAML config for the final retrain on all training classes.

The exported file is the winning trial's full config (as its MLflow run recorded it) with
``data.final: true``: ``tune-lsd train --config best.yaml`` then trains on ALL training
classes (no validation split) and evaluates the test classes once.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tune_lsd import tracking
from tune_lsd.config import Config


def export_best_config(
    tracking_uri: str, experiment: str, output: Path, metric: str = "val/recall@1", mode: str = "max"
) -> dict[str, Any]:
    """Write the best trial's config to ``output``; returns what was exported."""
    best = tracking.best_trial_run(tracking_uri, experiment, metric, mode)
    with tempfile.TemporaryDirectory() as folder:
        config_file = tracking.download_trial_file(tracking_uri, best.info.run_id, "config.yaml", Path(folder))
        config = Config.load(config_file)
    final = config.with_overrides(
        {"data.final": True, "runtime.threads": None, "runtime.device": "auto", "runtime.progress": True}
    )
    value = best.data.metrics[tracking.mlflow_key(f"best/{metric}")]
    header = (
        f"# Exported by tune-lsd from search {experiment!r}, trial {best.info.run_name} "
        f"(MLflow run {best.info.run_id}), best {metric} = {value:.4f}.\n"
        "# data.final: true -> `tune-lsd train --config THIS` retrains on all training classes and tests once.\n"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(header + final.to_yaml())
    return {"trial": best.info.run_name, "run_id": best.info.run_id, "value": value, "output": str(output)}
