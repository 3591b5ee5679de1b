"""The search runner: a search space + settings -> a Ray Tune Tuner, run, tracked, summarised.

    settings = SearchSettings(name="demo", space="lsd", num_samples=8, max_concurrent=2)
    result = run_search(settings)        # or resume_search("demo") after the driver died

Layout under ``settings.runs_dir`` (default ``./runs``):

- ``mlflow.db`` + ``mlartifacts/``: the embedded MLflow store (unless ``tracking_uri`` is set),
- ``ray/<name>/``: Ray Tune's experiment folder (trial checkpoints; what --resume restores),
- ``searches/<name>/search.yaml``: the settings, so that ``--resume NAME`` needs nothing else,
- ``searches/<name>/finished/``: the final results of finished trials (never trained again),
- ``searches/<name>/spool/``: tracking records not yet delivered to MLflow (a folder per trial,
  deleted once delivered; what a server that stayed down missed waits here for ``sync``).
"""

from __future__ import annotations

import importlib
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import optuna
import ray
import yaml
from ray import tune

from search_spaces.loader import SearchSpace
from trainables.dml import DMLTrainable
from tune_lsd import __version__, tracking
from tune_lsd.data.datasets import data_footprint
from tune_lsd.data.memory import check_memory, check_object_store, default_object_store
from tune_lsd.data.splits import build_splits
from tune_lsd.search import callbacks
from tune_lsd.search.failed_restore import RestoreFailed
from tune_lsd.search.lifecycle import close_recorder, completion_record, deliver_left_over, record_completion
from tune_lsd.search.outages import outage_lines
from tune_lsd.search.ray_setup import (
    check_resources,
    check_storage_visible,
    cluster_address,
    end_ray_in_background,
    smallest_object_store,
    start_ray,
    wait_for_ray_end,
)
from tune_lsd.search.running import RunningSearch, running
from tune_lsd.search.searchers import TrialCountedSearch, gp_switch_line, tune_config
from tune_lsd.search.settings import SearchError, SearchSettings, load_settings, prepare_space
from tune_lsd.search.summary import print_summary, summarise
from tune_lsd.storage import Location
from tune_lsd.storage.waiting import is_transient, retrying

RESTORE_ATTEMPTS = 5  # restores of a resumed search whose saved state the storage did not give


def run_search(
    settings: SearchSettings,
    resume: bool = False,
    log=print,
    earlier: Sequence[tuple[dict[str, Any], float]] = (),
    *,
    trainable: type[DMLTrainable] = DMLTrainable,
    tune_callbacks: Sequence[tune.Callback] = (),
) -> dict[str, Any]:
    """Run (or resume) a search to the end; returns the summary that is also printed.
    ``earlier``: (sampled values, result) of the trials before an ``--extend``.
    ``trainable`` and ``tune_callbacks`` are for benchmarks of the search machinery (a
    :class:`DMLTrainable` with a stand-in trainer, Tune callbacks that measure the driver)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True
    # Ray warns when a suggestion takes over a second; the GP's model fit does, by design.
    warnings.filterwarnings("ignore", message="Define-by-run function passed in the `space` argument took")
    space = prepare_space(settings)
    base = space.base_config()
    epochs = base.schedule.epochs
    footprint = data_footprint(
        base.data.dataset, base.data.root, base.data.stored_size, log
    )  # before anything is written
    log(f"dataset: {footprint.describe()}")
    check_memory(footprint, copies=1 if settings.share_data else settings.max_concurrent)
    if settings.share_data and not cluster_address(settings):
        check_object_store(footprint, default_object_store(settings.object_store_mb))  # before decoding
    tracking.check_tracking_uri(settings.resolved_tracking_uri())
    if settings.storage_location.is_remote:
        settings.storage_location.check_writable()
    if not resume:
        settings.settings_location.write_text(yaml.safe_dump(settings.model_dump(), sort_keys=False))

    # Ray's start is mostly waiting for its processes: meanwhile, other threads open the MLflow
    # store and decode the data the trials share (a search's fixed cost, paid once).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-setup") as setup:
        opening_store = setup.submit(_open_search_run, settings, space, resume)
        loading = setup.submit(_shared_splits, settings, base)
        start_ray(settings)
        context = None
        try:
            context = opening_store.result()
            shared_splits = loading.result()
        except BaseException:
            ray.shutdown()
            raise
    recorder = tracking.search_recorder(context)
    ending_ray: threading.Thread | None = None
    try:
        check_resources(settings, ray.cluster_resources())
        if shared_splits is not None and (object_store := smallest_object_store()) is not None:
            check_object_store(footprint, object_store)  # the store Ray really has, before the data goes in
        check_storage_visible(settings.ray_storage)
        driver_node = ray.get_runtime_context().get_node_id()
        log(
            f"search {settings.name!r}: space {space.name}, {settings.searcher} + {settings.scheduler}, "
            f"{settings.num_samples} trials x {epochs} epochs, {settings.max_concurrent} at a time; "
            f"MLflow {settings.resolved_tracking_uri()}"
        )
        if (line := gp_switch_line(settings)) is not None:
            log(line)
        trainable_with_data = _trainable(trainable, settings, base, context, shared_splits)
        experiment = settings.experiment_location
        started = time.perf_counter()
        if resume and not any(name.startswith("experiment_state-") for name in experiment.names(".json")):
            # Killed before Ray Tune saved its first state (no trial had started): start afresh.
            log(f"search {settings.name!r} was stopped before its first trial started: starting it from the beginning")
            resume = False
        if resume:
            if not tune.Tuner.can_restore(experiment.uri):
                raise SearchError(f"nothing to resume at {experiment.uri}")

            def restore() -> tune.Tuner:
                return retrying(
                    lambda: tune.Tuner.restore(
                        experiment.uri,
                        trainable=trainable_with_data,
                        resume_errored=True,
                        param_space=_param_space(settings, space),
                    ),
                    "reading the search's saved state",
                    experiment.uri,
                    experiment.patience_s,
                )

            tuner = restore()
        else:
            config = tune_config(settings, space, epochs, earlier)
            tuner = tune.Tuner(
                trainable_with_data,
                param_space=_param_space(settings, space),
                tune_config=config,
                run_config=_run_config(settings, epochs, config.search_alg, tune_callbacks),
            )
        # The best model is exported at the end with torch: import it while the trials train.
        threading.Thread(target=_import_quietly, args=("tune_lsd.serving",), daemon=True).start()
        storage = settings.storage_location
        with outage_lines(storage.uri, storage.patience_s, log) as outages:
            search = RunningSearch(context, epochs, settings.finished_location, settings.ray_storage.uri, outages)
            with running(search):
                results = _fit(tuner, restore if resume else None, experiment, log)
        # Ray's processes end (~1.5 s, mostly waiting) while the best model is exported and registered.
        ending_ray = end_ray_in_background()
        deliver_left_over(settings, log, driver_node)  # what trials could not deliver while the server was down
        summary = summarise(settings, results, context, recorder, time.perf_counter() - started)
        summary["spooled_records"] = close_recorder(settings, recorder, log)
        if summary["state"] == "interrupted":
            log(f"search {settings.name!r} was interrupted; continue it with: tune-lsd search --resume {settings.name}")
        else:
            record_completion(settings, summary, context, log)
    except BaseException as error:
        if not recorder.closed:
            recorder.search_ended("interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            close_recorder(settings, recorder, log)
        raise
    finally:
        if ending_ray is not None:
            wait_for_ray_end(ending_ray)
        ray.shutdown()
    print_summary(summary, log)
    if summary["trials"] and summary["errored"] == summary["trials"]:
        raise SearchError(f"all {summary['trials']} trials errored; the first: {summary['first_error']}")
    return summary


def _fit(tuner: tune.Tuner, restore: Callable[[], tune.Tuner] | None, experiment: Location, log) -> Any:
    """``tuner.fit()``. When Ray Tune could not read a resumed search's saved state because the
    storage did not answer (search/failed_restore.py), wait for the storage and restore again."""
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        try:
            return tuner.fit()
        except RestoreFailed as error:
            if restore is None or attempt == RESTORE_ATTEMPTS or not is_transient(error.__cause__ or error):
                raise
            log(f"search: {error}; restoring it again once the storage answers")
            experiment.names(".json")  # (waits for the storage, with its patience)
            tuner = restore()
    raise AssertionError("unreachable")


def resume_search(name: str, runs_dir: str = "runs", log=print, storage: str | None = None) -> dict[str, Any]:
    """Continue a search whose driver died, from the settings it saved in ``storage`` (default:
    the runs folder); a completed search is only reported: there is nothing to continue."""
    settings = load_settings(name, runs_dir, storage)
    completed = completion_record(settings)
    if completed is not None:
        log(
            f"search {name!r} is complete ({completed['trials']} trials, {completed['errored']} errored); "
            f"nothing to resume. Its results are in MLflow: tune-lsd report {name}"
        )
        return completed
    return run_search(settings, resume=True, log=log)


# --- pieces of the Tuner -----------------------------------------------------------------------


def _open_search_run(settings: SearchSettings, space: SearchSpace, resume: bool) -> tracking.TrackingContext:
    """The search's MLflow parent run (the store is created on first use)."""
    context = tracking.start_search_run(
        settings.resolved_tracking_uri(),
        settings.name,
        _search_params(settings, space),
        settings.runs_path / "mlartifacts" if settings.tracking_uri is None else None,
        settings.spool_path,
        ray_experiment=settings.ray_name,
    )
    if resume:  # what the interrupted search could not deliver goes first
        tracking.deliver_spools(settings.spool_path)
    else:  # what was searched, for the report and for anyone reading the run later
        tracking.log_search_text(context, yaml.safe_dump(space.model_dump(), sort_keys=False), tracking.SPACE_ARTIFACT)
    return context


def _shared_splits(settings: SearchSettings, base):
    """The data splits every trial shares: decoded once here and put in Ray's object store
    once; trials on a node share one copy (None with --no-shared-data)."""
    return build_splits(base.data, base.seed) if settings.share_data else None


def _trainable(
    trainable: type[DMLTrainable], settings: SearchSettings, base, context: tracking.TrackingContext, shared
):
    base_config = base.with_overrides(
        {
            "runtime.threads": max(1, int(settings.cpus_per_trial)),
            "runtime.progress": False,
            "runtime.device": "cuda" if settings.gpus_per_trial > 0 else "cpu",
        }
    ).to_dict()
    with_data = tune.with_parameters(
        trainable,
        base_config=base_config,
        tracking=context,
        select_metric=settings.metric,
        shared_splits=shared,
        finished_dir=settings.finished_location.uri,
        undelivered_dir=settings.undelivered_location.uri,
        storage=settings.storage_location,
    )
    return tune.with_resources(with_data, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def _param_space(settings: SearchSettings, space: SearchSpace) -> dict[str, Any] | None:
    return space.tune_param_space() if settings.scheduler == "pbt" else None


def _run_config(
    settings: SearchSettings, epochs: int, search_alg: object, extra_callbacks: Sequence[tune.Callback] = ()
) -> tune.RunConfig:
    """``search_alg``: the Tuner's searcher (PBT's trials come from Ray's own generator: ``None``)."""
    keep = 3 if settings.scheduler == "pbt" else 2
    return tune.RunConfig(
        name=settings.ray_name,
        storage_path=settings.ray_storage.uri,
        # A finished trial needs no checkpoint: its best model goes to MLflow when it ends.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=keep,
            checkpoint_score_attribute=settings.metric,
            checkpoint_score_order=settings.mode,
            checkpoint_frequency=settings.perturbation_interval
            if settings.scheduler == "pbt"
            else settings.checkpoint_every,
            checkpoint_at_end=False,
        ),
        # A GPU trial whose reused actor is refused (memory of the last trial still held) fails to
        # start; one retry gives it a fresh actor instead of losing it.
        failure_config=tune.FailureConfig(
            max_failures=max(settings.max_failures, 1) if settings.gpus_per_trial > 0 else settings.max_failures
        ),
        callbacks=[
            *([callbacks.TrialCountCallback(search_alg)] if isinstance(search_alg, TrialCountedSearch) else []),
            callbacks.TrialStateCallback(),
            callbacks.ProgressCallback(settings.metric, epochs, settings.num_samples),
            *(
                [callbacks.ModelRetentionCallback(settings.metric, settings.mode, settings.keep_models)]
                if settings.keep_models
                else []
            ),
            *extra_callbacks,
        ],
        verbose=0,  # ProgressCallback prints one line per event instead of Tune's tables
    )


def _search_params(settings: SearchSettings, space: SearchSpace) -> dict[str, Any]:
    return {
        "space": space.name,
        "space_description": space.description,
        "dataset": space.base_config().data.dataset,
        "searcher": settings.searcher,
        "scheduler": settings.scheduler,
        "metric": settings.metric,
        "num_samples": settings.num_samples,
        "max_concurrent": settings.max_concurrent,
        **({"startup_trials": settings.tpe_startup_trials} if settings.searcher != "random" else {}),
        "overrides": " ".join(settings.overrides),
        "code_version": f"{__version__} ({_git_revision()})",
    }


def _git_revision() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                cwd=Path(__file__).parent,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _import_quietly(module: str) -> None:
    """Import ``module`` ahead of its use; a failure shows later, where it is used."""
    try:
        importlib.import_module(module)
    except Exception:
        pass
