"""``tune-lsd compare``: does one search space beat another on my data? Answered with intervals.

    summary = run_compare(CompareSettings(name="lsd-vs-base", spaces=["lsd", "baseline"],
                                          num_samples=8, search_seeds=3, seeds=3))

1. For each space and search seed ``k`` (0 .. S-1): the search ``NAME-SPACE-sK`` (the same
   trials, searcher, scheduler and ``--set`` on both sides; only the space differs).
2. Each search's best config, exported as for the final model (all training classes), is
   retrained with seeds 0 .. R-1 (the same seeds on both sides) and tested once.
3. The paired differences of test Recall@1 and MAP@R, over retrain seeds and over search
   seeds (stats.py), go to the terminal (the last line starts with ``verdict:``), to MLflow (the
   experiment NAME: a parent run with the differences and one nested run per retrain) and to
   ``runs/reports/NAME/compare.html`` (a forest plot of the differences).

Everything done is kept in ``runs/comparisons/NAME/compare.json`` after each step: an
interrupted comparison continues with ``--resume NAME`` (finished searches and retrains are
not run again; an interrupted search is resumed).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from tune_lsd import tracking
from tune_lsd.compare.page import write_page
from tune_lsd.compare.settings import METRICS, CompareSettings
from tune_lsd.compare.stats import Difference, paired_differences, verdict
from tune_lsd.config import Config
from tune_lsd.export import export_best_config
from tune_lsd.search import SearchError, SearchSettings, completion_record, prepare_space, resume_search, run_search
from tune_lsd.storage import Location

STATE_FILE = "compare.json"


def run_compare(settings: CompareSettings, log=print, resume: bool = False) -> dict[str, Any]:
    """Run (or continue) the comparison to its verdict; returns its summary (also printed)."""
    started = time.perf_counter()
    for space in settings.spaces:  # an unknown space or a bad --set: one line, before anything is written
        prepare_space(settings.search_settings(space, 0))
    state = _load_state(settings.folder) if resume else None
    if state is None:
        if (settings.folder / STATE_FILE).exists():
            raise SearchError(
                f"a comparison named {settings.name!r} already exists in {settings.folder}: "
                f"pick another --name or continue it with --resume {settings.name}"
            )
        state = {"settings": settings.model_dump(), "retrains": [], "floors": None}
        _save_state(settings.folder, state)
    uri = settings.search_settings(settings.spaces[0], 0).resolved_tracking_uri()
    context = tracking.start_comparison_run(
        uri,
        settings.name,
        settings.model_dump(exclude={"runs_dir"}),
        Path(settings.runs_dir).resolve() / "mlartifacts",
        settings.search_names(),
    )
    done = {(r["space"], r["search_seed"], r["seed"]) for r in state["retrains"]}
    total = len(settings.spaces) * settings.search_seeds * settings.seeds
    for search_seed in range(settings.search_seeds):
        for space in settings.spaces:
            search = _searched(settings.search_settings(space, search_seed), log)
            best_file = settings.folder / search / "best.yaml"
            exported = export_best_config(uri, search, best_file)
            for seed in range(settings.seeds):
                if (space, search_seed, seed) in done:
                    continue
                record = _retrain(settings, best_file, seed, with_floors=state["floors"] is None)
                if state["floors"] is None:
                    state["floors"] = record.pop("floors")
                record.update(
                    space=space,
                    search_seed=search_seed,
                    search=search,
                    trial=exported["trial"],
                    best_file=str(best_file),
                )
                tracking.log_retrain_run(
                    context,
                    f"{search}-retrain{seed}",
                    {
                        "tune_lsd.space": space,
                        "tune_lsd.search_seed": str(search_seed),
                        "tune_lsd.seed": str(seed),
                        "tune_lsd.search_name": search,
                        "tune_lsd.trial": exported["trial"],
                    },
                    record["metrics"],
                )
                state["retrains"].append(record)
                _save_state(settings.folder, state)
                log(
                    f"[{len(state['retrains'])}/{total}] {search} retrain seed {seed}: test Recall@1 "
                    f"{record['metrics']['test/recall@1']:.4f}, MAP@R {record['metrics']['test/map@r']:.4f} "
                    f"({record['seconds']:.0f} s)"
                )
    return _conclude(settings, state, context, time.perf_counter() - started, log)


def resume_compare(name: str, runs_dir: str = "runs", log=print) -> dict[str, Any]:
    """Continue the comparison ``name`` from its state file."""
    folder = Path(runs_dir).resolve() / "comparisons" / name
    state = _load_state(folder)
    if state is None:
        raise SearchError(f"no comparison named {name!r} in {folder.parent}")
    return run_compare(CompareSettings.model_validate({**state["settings"], "runs_dir": runs_dir}), log, resume=True)


def _searched(search: SearchSettings, log) -> str:
    """The search's name once it has completed: run, resumed, or found complete."""
    if search.settings_location.exists():
        if completion_record(search) is None:
            log(f"search {search.name!r} was interrupted: resuming it")
            resume_search(search.name, search.runs_dir, log=log)
    else:
        run_search(search, log=log)
    if completion_record(search) is None:
        raise SearchError(f"search {search.name!r} did not complete; continue with: tune-lsd compare --resume NAME")
    return search.name


def _retrain(settings: CompareSettings, best_file: Path, seed: int, with_floors: bool) -> dict[str, Any]:
    """The exported config retrained with ``seed`` and tested once (the floors with the first)."""
    from tune_lsd.train import train_and_test  # torch: only where something trains

    config = Config.load(best_file).with_overrides(
        {"seed": seed, "runtime.progress": False, "runtime.threads": settings.threads}
    )
    run_dir = best_file.parent / f"retrain-seed{seed}"
    summary = train_and_test(config, run_dir, log=lambda line: None, baselines=with_floors)
    record = {"seed": seed, "metrics": {m: summary["test"][m] for m in METRICS}, "seconds": summary["train_s"]}
    if with_floors:
        record["floors"] = {
            "raw pixels": {m: summary["raw_pixels"][m] for m in METRICS},
            "untrained network": {m: summary["untrained"][m] for m in METRICS},
        }
    return record


def _conclude(
    settings: CompareSettings, state: dict, context: tracking.TrackingContext, seconds: float, log
) -> dict[str, Any]:
    a, b = settings.spaces
    differences = [d for metric in METRICS for d in paired_differences(state["retrains"], a, b, metric)]
    line = verdict(differences, a, b)
    page = write_page(settings, state, differences, line, Path(settings.runs_dir).resolve() / "reports" / settings.name)
    metrics = {}
    for d in differences:  # e.g. test/recall@1/search/mean, .../search/t_low
        prefix = f"{d.metric}/{d.level.split()[0]}"
        metrics[f"{prefix}/mean"] = d.mean
        for kind, interval in (("bootstrap", d.bootstrap), ("t", d.student_t)):
            if interval is not None:
                metrics[f"{prefix}/{kind}_low"], metrics[f"{prefix}/{kind}_high"] = interval
    tracking.end_comparison_run(context, metrics, {"tune_lsd.verdict": line}, page.parent)
    _print(settings, state, differences, page, log)
    log(line)
    return {
        "name": settings.name,
        "differences": [d.to_dict() for d in differences],
        "verdict": line,
        "retrains": state["retrains"],
        "floors": state["floors"],
        "page": str(page),
        "seconds": seconds,
    }


def _print(settings: CompareSettings, state: dict, differences: list[Difference], page: Path, log) -> None:
    a, b = settings.spaces
    log(
        f"\ncomparison {settings.name!r}: {a} vs {b}, {settings.search_seeds} search seeds x {settings.seeds} "
        f"retrain seeds, {settings.num_samples} trials per search; test classes, mean ± std over retrains:"
    )
    for space in settings.spaces:
        cells = []
        for metric, label in METRICS.items():
            values = [r["metrics"][metric] for r in state["retrains"] if r["space"] == space]
            mean = sum(values) / len(values)
            spread = (sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5
            cells.append(f"{label} {mean:.4f} ± {spread:.4f}")
        log(f"  {space:<18} " + "   ".join(cells))
    for floor, values in (state["floors"] or {}).items():
        log(f"  {floor:<18} " + "   ".join(f"{label} {values[m]:.4f}" for m, label in METRICS.items()))
    log(f"{a} - {b}, 95 % intervals (bootstrap; Student-t):")
    for d in differences:
        intervals = (
            "one pair: no interval"
            if d.bootstrap is None or d.student_t is None
            else f"[{d.bootstrap[0]:+.4f}, {d.bootstrap[1]:+.4f}]; [{d.student_t[0]:+.4f}, {d.student_t[1]:+.4f}]"
        )
        log(f"  {METRICS[d.metric]:<9} over {len(d.values)} {d.level:<13} {d.mean:+.4f}  {intervals}")
    log(f"page: {page.resolve().as_uri()}   MLflow: experiment {settings.name!r}")


def _load_state(folder: Path) -> dict | None:
    path = folder / STATE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _save_state(folder: Path, state: dict) -> None:
    Location(folder / STATE_FILE).write_text(json.dumps(state, indent=1))  # whole file or nothing
