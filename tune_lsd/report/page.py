"""A search report: one self-contained HTML page (and its PNG plots) from what MLflow recorded.

    path = write_report("sqlite:///runs/mlflow.db", "demo", Path("runs/reports/demo"))

The page holds the trials table sorted by the metric, the learning curves (the best trials in
colour, early-stopped ones in grey), parallel coordinates of the sampled hyperparameters,
their importance (Optuna's fANOVA evaluator, seeded), the LSD weight and temperature against
the metric, retrieval examples of the best trial's model on the validation classes (random
and worst queries with their nearest neighbours), and the best trial's full configuration.
It works for a running search too (the trials so far), and is also logged as artifacts
(``report/``) of the search's parent run.
"""

from __future__ import annotations

import base64
import html
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml

from search_spaces.loader import ParamSpec
from tune_lsd import tracking
from tune_lsd.config import Config
from tune_lsd.report.plots import plot_curves, plot_optuna
from tune_lsd.report.trials import TrialSummary, load_trials, optuna_study

LSD_PARAMS = ("lsd.weight", "lsd.temperature")
PLOTS = ("curves", "parallel", "importance", "lsd")
EXAMPLE_QUERIES = 12  # retrieval examples drawn at random (plus the worst queries)
MIN_FULL_TRIALS = 3  # fewer trials that ran every epoch: the hyperparameter plots use all trials
# fANOVA's time grows faster than the trials (~2 minutes at 2,000 trials on two cores): past
# this many, the importance comes from this many trials drawn at random (seeded).
IMPORTANCE_TRIALS = 300


def write_report(
    tracking_uri: str,
    search: str,
    out: Path,
    metric: str = "val/recall@1",
    mode: str = "max",
    log_to_mlflow: bool = True,
) -> Path:
    """Write ``out/report.html`` and its PNGs for search ``search``; returns the HTML path."""
    parent = tracking.search_parent_run(tracking_uri, search)
    trials = load_trials(tracking_uri, search, metric, mode)
    if not trials:
        raise tracking.TrackingError(f"search {search!r} has no trials yet")
    out.mkdir(parents=True, exist_ok=True)
    for stale in PLOTS:  # a plot left over from an earlier report of this search must not be logged again
        (out / f"{stale}.png").unlink(missing_ok=True)
    params = _space_params(tracking_uri, parent.info.run_id)
    # Early-stopped trials' values come from fewer epochs: compare hyperparameters on the
    # trials that ran every epoch, when there are enough of them.
    full = [t for t in trials if t.state == "completed"]
    basis = full if len(full) >= MIN_FULL_TRIALS else trials
    study = optuna_study(basis, params, mode)
    sample = random.Random(0).sample(basis, IMPORTANCE_TRIALS) if len(basis) > IMPORTANCE_TRIALS else basis
    importance_study = optuna_study(sample, params, mode) if sample is not basis else study

    plot_curves(trials, metric, out / "curves.png")
    sections = [("Learning curves", _inline(out / "curves.png"))]
    sections += _hyperparameter_sections(
        study, params, metric, out, _basis_note(len(basis), len(full), len(trials)), importance_study
    )

    sections.append(("Retrieval examples", retrieval_examples(tracking_uri, trials[0])))
    page = _page(search, parent, trials, metric, sections, _best_config(tracking_uri, trials))
    report = out / "report.html"
    report.write_text(page)
    if log_to_mlflow:
        tracking.log_folder(tracking_uri, parent.info.run_id, out, "report")
    return report


def _basis_note(used: int, full: int, total: int) -> str:
    if used == full:
        return (
            f'<p class="basis">The plots below use the {full} of {total} trials that ran every epoch '
            "(early-stopped trials' values come from fewer epochs and are not comparable).</p>"
        )
    return (
        f'<p class="basis">The plots below use all {total} trials, early-stopped ones included '
        f"(only {full} ran every epoch).</p>"
    )


def _hyperparameter_sections(
    study: optuna.Study,
    params: dict[str, ParamSpec],
    metric: str,
    out: Path,
    note: str,
    importance_study: optuna.Study,
) -> list[tuple[str, str]]:
    if not params:
        return [
            (
                "Hyperparameters",
                f"<p>No search space was recorded with this search ({tracking.SPACE_ARTIFACT} "
                "on its parent run), so the hyperparameter plots are left out.</p>",
            )
        ]
    finished = [t for t in study.trials if t.params]
    if len(finished) < 2:
        return [("Hyperparameters", "<p>Parallel coordinates and importance need two trials with a result.</p>")]
    plot_optuna("parallel", study, metric, out / "parallel.png")
    sections = [("Parallel coordinates", note + _inline(out / "parallel.png"))]
    try:
        plot_optuna("importance", importance_study, metric, out / "importance.png")
        sampled = len(importance_study.trials) < len(study.trials)
        sample_note = (
            f"<p>From {len(importance_study.trials)} of the {len(study.trials)} trials, drawn at random: "
            "fANOVA's time grows faster than the trials.</p>"
            if sampled
            else ""
        )
        sections.append(("Hyperparameter importance (fANOVA)", sample_note + _inline(out / "importance.png")))
    except (ValueError, RuntimeError) as error:  # e.g. every trial sampled the same values
        sections.append(("Hyperparameter importance", f"<p>Not computed: {html.escape(str(error))}</p>"))
    lsd_params = [p for p in LSD_PARAMS if any(p in t.params for t in finished)]
    if lsd_params:
        plot_optuna("slice", study, metric, out / "lsd.png", lsd_params)
        sections.append(("LSD weight and temperature against the metric", _inline(out / "lsd.png")))
    else:
        sections.append(
            ("LSD weight and temperature", "<p>This search does not tune the LSD weight or temperature.</p>")
        )
    return sections


def retrieval_examples(tracking_uri: str, best: TrialSummary, count: int = EXAMPLE_QUERIES, k: int = 5) -> str:
    """The best trial's model on its validation classes: ``count`` seeded queries and the
    worst ones, each with its ``k`` nearest neighbours (correct framed green, wrong red)."""
    if best.best is None:
        return "<p>No trial has a model yet.</p>"
    from tune_lsd.data.splits import build_splits  # torch: imported only when a report is written
    from tune_lsd.engine import load_model_state
    from tune_lsd.metrics import nearest_neighbours
    from tune_lsd.serving.embedder import embedder_from_snapshot
    from tune_lsd.serving.retrieval import WORST_QUERIES, neighbour_rows_html, worst_queries

    with tempfile.TemporaryDirectory() as folder:
        try:
            model_file = tracking.download_trial_model(tracking_uri, best.run_id, Path(folder))
        except Exception:  # MLflow raises several types for a missing artifact
            return f"<p>Not shown: trial {html.escape(best.name)} has no model artifact yet (it is still running).</p>"
        snapshot = load_model_state(model_file)
    config = Config.from_dict(snapshot["config"])
    try:
        val = build_splits(config.data, config.seed).val
    except (FileNotFoundError, ValueError) as error:  # e.g. the dataset is on another machine
        return f"<p>Not shown: the validation images cannot be read here ({html.escape(str(error))}).</p>"
    if val is None:
        return "<p>Not shown: this search has no validation classes.</p>"
    embeddings = embedder_from_snapshot(snapshot).embed(val.images)
    ids, similarities = nearest_neighbours(embeddings, k=k)
    correct = val.labels[ids] == val.labels[:, None]
    answerable = np.flatnonzero(np.bincount(val.labels)[val.labels] > 1)
    shown = sorted(np.random.default_rng(config.seed).choice(answerable, min(count, len(answerable)), replace=False))
    worst = [answerable[i] for i in worst_queries(correct[answerable], similarities[answerable], WORST_QUERIES)]
    captions = [f"class {label}" for label in val.labels]

    def rows(chosen) -> str:
        return neighbour_rows_html(
            val.images, val.images, list(chosen), ids, similarities, captions, val.labels, val.labels
        )

    return (
        f"<p>Trial <b>{html.escape(best.name)}</b>'s best model (epoch {snapshot.get('epoch')}) on the "
        f"{len(val)} validation images: each query (blue) with its {k} nearest other images, "
        f'<span style="color:#1a9e3a">green</span> when of the query\'s class, '
        f'<span style="color:#d11f1f">red</span> when not.</p>'
        f"<h3>{len(shown)} queries drawn at random (seed {config.seed})</h3>{rows(shown)}"
        f"<h3>The {len(worst)} worst queries</h3>{rows(worst)}"
    )


def _space_params(tracking_uri: str, parent_run_id: str) -> dict[str, ParamSpec]:
    # A search made before the space was recorded has none: the plots of the params are skipped.
    text = _artifact_text(tracking_uri, parent_run_id, tracking.SPACE_ARTIFACT)
    if text is None:
        return {}
    return {key: ParamSpec.model_validate(spec) for key, spec in yaml.safe_load(text)["params"].items()}


def _best_config(tracking_uri: str, trials: list[TrialSummary]) -> str | None:
    # A trial that has not finished its first epoch has no config artifact yet.
    return None if trials[0].best is None else _artifact_text(tracking_uri, trials[0].run_id, "config.yaml")


def _artifact_text(tracking_uri: str, run_id: str, artifact_path: str) -> str | None:
    """The text of one artifact of a run, or None when the run does not have it."""
    with tempfile.TemporaryDirectory() as folder:
        try:
            return tracking.download_trial_file(tracking_uri, run_id, artifact_path, Path(folder)).read_text()
        except Exception:  # MLflow raises several types for a missing artifact
            return None


def _inline(path: Path) -> str:
    """An <img> with the PNG inline, so that the page is self-contained (also inside MLflow's viewer)."""
    encoded = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{path.stem}" data-plot="{path.stem}" src="data:image/png;base64,{encoded}">'


def _page(
    search: str,
    parent,
    trials: list[TrialSummary],
    metric: str,
    sections: list[tuple[str, str]],
    best_config: str | None,
) -> str:
    keys = sorted({k for t in trials for k, v in t.sampled.items() if v is not None})
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["#", "trial", "state", "epochs", f"best {metric}", *keys])
    rows = []
    for rank, trial in enumerate(trials, start=1):
        best_text = "" if trial.best is None else f"{trial.best:.4f}"
        cells = [
            str(rank),
            trial.name,
            trial.state,
            str(trial.epochs),
            best_text,
            *(_short(trial.sampled.get(k)) for k in keys),
        ]
        rows.append(
            f'<tr class="{trial.state.replace(" ", "-")}">'
            + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
            + "</tr>"
        )
    state = parent.data.tags.get(tracking.STATE_TAG, "running")
    settings = ", ".join(
        f"{k} {html.escape(parent.data.params[k])}"
        for k in ("space", "searcher", "scheduler", "num_samples")
        if k in parent.data.params
    )
    best = trials[0]
    summary = (
        f"<p><b>{len(trials)}</b> trials, state <b>{html.escape(state)}</b> ({settings}). Best: "
        f"<b>{html.escape(best.name)}</b> with {html.escape(metric)} = <b>{best.best:.4f}</b>.</p>"
        if best.best is not None
        else f"<p>{len(trials)} trials, none with a result yet.</p>"
    )
    body = "".join(f"<h2>{html.escape(title)}</h2>{content}" for title, content in sections)
    config = (
        (
            f"<h2>Best configuration</h2><p>Retrain it on all training classes and test once: "
            f"<code>tune-lsd export --experiment {html.escape(search)} -o best.yaml &amp;&amp; "
            f"tune-lsd train --config best.yaml</code></p><pre>{html.escape(best_config)}</pre>"
        )
        if best_config
        else ""
    )
    from tune_lsd.serving.retrieval import RETRIEVAL_CSS

    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>tune-lsd report: {html.escape(search)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ccc; padding: 3px 7px; text-align: right; white-space: nowrap; }}
tr.stopped-early {{ color: #777; }} tr.errored {{ color: #b00; }} img {{ max-width: 100%; }}
pre {{ background: #f5f5f5; padding: 1em; font-size: 12px; }}
{RETRIEVAL_CSS}
</style></head><body>
<h1>Search report: {html.escape(search)}</h1>
{summary}
<h2>Trials, best first</h2>
<table id="trials"><tr>{head}</tr>{"".join(rows)}</table>
{body}
{config}
</body></html>
"""


def _short(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.4g}" if isinstance(value, float) else str(value)
