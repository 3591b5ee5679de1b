"""``tune-lsd finalize NAME``: the search's final model, which is the model to use.

The best trial was trained on the search's training classes only (a fifth of them held out
for validation) and, with ASHA, maybe for the shortest rung. Its config, retrained on all
training classes with the full schedule, is the model a user wants. This does what the demo
did by hand:

1. the best trial's config is exported (``runs/final/NAME/best.yaml``, ``data.final: true``),
2. retrained (``runs/final/NAME/run/``) and tested once on the test classes,
3. logged to the search's MLflow experiment as the run ``NAME-final`` (nested in the search's
   run: its config, test metrics, raw-pixel and untrained baselines, the model file),
4. registered as a new version of ``NAME-best`` with the alias ``champion``; the best trial's
   version keeps ``search-best``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tune_lsd import tracking
from tune_lsd.config import Config, parse_override
from tune_lsd.export import export_best_config
from tune_lsd.search.champion import CHAMPION, register_model
from tune_lsd.search.settings import load_settings


def finalize_search(
    name: str, runs_dir: str = "runs", storage: str | None = None, overrides: Sequence[str] = (), log=print
) -> dict[str, Any]:
    """Retrain, test, log and register the final model of search ``name``; ``overrides``
    (``KEY=VALUE``) change the exported config (e.g. ``schedule.epochs=10``). Returns the
    retrain's summary with the run id and registered version."""
    from tune_lsd.engine import load_model_state, save_file  # torch: only in the commands that train
    from tune_lsd.train import train_and_test

    settings = load_settings(name, runs_dir, storage)
    uri = settings.resolved_tracking_uri()
    tracking.check_tracking_uri(uri)
    folder = settings.runs_path / "final" / name
    exported = export_best_config(uri, name, folder / "best.yaml", settings.metric, settings.mode)
    config = Config.load(folder / "best.yaml").with_overrides(dict(parse_override(o) for o in overrides))
    log(
        f"search {name!r}: the best trial {exported['trial']} ({settings.metric} {exported['value']:.4f}) retrained "
        f"on all training classes for {config.schedule.epochs} epochs, then tested once"
    )
    summary = train_and_test(config, folder / "run", log=log)

    context = tracking.search_context(uri, name)
    snapshot = load_model_state(folder / "run" / "best.pt")
    model = {key: snapshot[key] for key in ("config", "epoch", "student", "history")}  # no teacher, no optimiser
    metrics = {
        **summary["test"],
        **{f"untrained/{k}": v for k, v in summary["untrained"].items() if k.startswith("test/")},
        **{f"raw_pixels/{k}": v for k, v in summary["raw_pixels"].items() if k.startswith("test/")},
    }
    with tempfile.TemporaryDirectory() as scratch:
        artifacts = Path(scratch) / "artifacts"
        (artifacts / tracking.CHECKPOINT_DIR).mkdir(parents=True)
        save_file(model, artifacts / tracking.CHECKPOINT_DIR / tracking.MODEL_FILE)
        for file in ("config.yaml", "summary.json", "metrics.jsonl"):
            (artifacts / file).write_bytes((folder / "run" / file).read_bytes())
        run_id = tracking.log_final_run(
            context, f"{name}-final", {**config.flat(), "final_of_trial": exported["trial"]}, metrics, artifacts
        )
        version = register_model(context, run_id, f"{name}-best", model, Path(scratch), aliases=(CHAMPION,))
    summary.update(run_id=run_id, registered_model=f"{name}-best", registered_version=version)
    _print_result(summary, uri, log)
    return summary


def _print_result(summary: dict[str, Any], tracking_uri: str, log) -> None:
    """How to load the final model, then (the last lines) its test numbers against the two
    floors it must clear, side by side."""
    log(
        f"registered as models:/{summary['registered_model']}@champion (version {summary['registered_version']}; "
        f"the search's best trial is @search-best). In Python (needs torch, numpy and mlflow):\n"
        f"  import mlflow; mlflow.set_tracking_uri({tracking_uri!r})\n"
        f"  model = mlflow.pyfunc.load_model('models:/{summary['registered_model']}@champion')"
    )
    log(f"\ntest Recall@1 / MAP@R on the {summary['registered_model'].removesuffix('-best')!r} test classes:")
    for label, metrics in (
        ("final model", summary["test"]),
        ("untrained network", summary["untrained"]),
        ("raw pixels", summary["raw_pixels"]),
    ):
        log(f"  {label:<18} {metrics['test/recall@1']:.4f}   {metrics['test/map@r']:.4f}")
