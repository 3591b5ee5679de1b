"""The search runner: a search space + settings -> a Ray Tune Tuner, run, tracked, summarised.

    settings = SearchSettings(name="demo", space="lsd", num_samples=8, max_concurrent=2)
    result = run_search(settings)        # or resume_search("demo") after the driver died

Layout under ``settings.runs_dir`` (default ``./runs``):

- ``mlflow.db`` + ``mlartifacts/``: the embedded MLflow store (unless ``tracking_uri`` is set),
- ``ray/<name>/``: Ray Tune's experiment folder (trial checkpoints; what --resume restores),
- ``searches/<name>/search.yaml``: the settings, so that ``--resume NAME`` needs nothing else,
- ``searches/<name>/spool/``: tracking records not yet delivered to MLflow (a folder per trial,
  deleted once delivered; what a server that stayed down missed waits here for ``sync``).
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import optuna
import ray
import yaml
from pydantic import BaseModel, ConfigDict, Field
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from search_spaces.loader import SearchSpace, SearchSpaceError, load_space, validate_space
from tune_lsd import __version__, tracking
from tune_lsd.config import parse_override
from tune_lsd.data.datasets import check_root
from tune_lsd.data.splits import build_splits
from tune_lsd.errors import first_line
from trainables.dml import DMLTrainable, record_finished

SearcherName = Literal["optuna", "random"]
SchedulerName = Literal["asha", "pbt", "fifo"]
COMPLETED_FILE = "completed.json"  # next to search.yaml once the search has run to its end


class SearchError(RuntimeError):
    """The search cannot start or continue (message is one line)."""


class SearchSettings(BaseModel):
    """Everything a search needs; saved next to the results so that --resume can rebuild it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                      description="MLflow experiment and folder name: letters, digits, '.', '_' and '-'")
    space: str = "lsd"
    overrides: list[str] = Field(default_factory=list, description="--set key=value applied to the base config")
    searcher: SearcherName = "optuna"
    scheduler: SchedulerName = "asha"
    metric: str = "val/recall@1"
    mode: Literal["max", "min"] = "max"
    num_samples: int = Field(8, ge=1)
    max_concurrent: int = Field(2, ge=1)
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    seed: int = 0
    startup_trials: int | None = Field(
        None, ge=0, description="TPE: trials sampled at random before its model is used "
        "(default: a quarter of num_samples, at least 3 and at most Optuna's 10)")
    grace_period: int = Field(1, ge=1, description="ASHA: epochs before a trial can be stopped")
    reduction_factor: float = Field(2.0, gt=1)
    perturbation_interval: int = Field(2, ge=1, description="PBT: epochs between exploit/explore")
    max_failures: int = Field(0, ge=0)
    checkpoint_every: int = Field(1, ge=1, description="epochs between a trial's checkpoints (PBT: its perturbation interval)")
    keep_checkpoints: bool = Field(False, description="keep the Ray checkpoints of finished trials when the search completes")
    share_data: bool = Field(True, description="decode the dataset once per search into Ray's object store")
    object_store_mb: int | None = Field(None, gt=0, description="local Ray only: object store size (default: Ray's, ~30% of RAM)")
    time_budget_s: float | None = None
    address: str | None = None
    tracking_uri: str | None = None
    runs_dir: str = "runs"

    @property
    def tpe_startup_trials(self) -> int:
        """Optuna's 10 random start-up trials would leave TPE unused in an 8-trial search."""
        return self.startup_trials if self.startup_trials is not None else min(10, max(3, self.num_samples // 4))

    @property
    def runs_path(self) -> Path:
        return Path(self.runs_dir).resolve()

    @property
    def settings_file(self) -> Path:
        return self.runs_path / "searches" / self.name / "search.yaml"

    @property
    def finished_path(self) -> Path:
        """Final results of finished trials (what --resume must not train again)."""
        return self.settings_file.parent / "finished"

    @property
    def spool_path(self) -> Path:
        """Tracking records on their way to MLflow (see tune_lsd.spool)."""
        return self.settings_file.parent / "spool"

    @property
    def experiment_path(self) -> Path:
        """Ray Tune's folder of this search: trial results and checkpoints."""
        return self.runs_path / "ray" / self.name

    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or tracking.default_tracking_uri(self.runs_path)


def prepare_space(settings: SearchSettings) -> SearchSpace:
    """Load the space and apply --set overrides to its fixed part; validated before Ray starts."""
    space = load_space(settings.space)
    if settings.overrides:
        space.fixed = {**space.fixed, **dict(parse_override(o) for o in settings.overrides)}
        try:
            validate_space(space)
        except SearchSpaceError as error:
            raise SearchSpaceError(str(error).replace("base/fixed", "--set")) from None
    if settings.scheduler == "pbt" and settings.searcher == "optuna":
        raise SearchError("the pbt scheduler samples its own population: use --searcher random with --scheduler pbt")
    return space


def run_search(settings: SearchSettings, resume: bool = False, log=print) -> dict[str, Any]:
    """Run (or resume) a search to the end; returns the summary that is also printed."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True
    space = prepare_space(settings)
    base = space.base_config()
    epochs = base.schedule.epochs
    check_root(base.data.dataset, base.data.root)  # before anything is written
    tracking.check_tracking_uri(settings.resolved_tracking_uri())
    settings.settings_file.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        settings.settings_file.write_text(yaml.safe_dump(settings.model_dump(), sort_keys=False))

    # Ray's start is mostly waiting for its processes: meanwhile, other threads open the MLflow
    # store and decode the data the trials share (a search's fixed cost, paid once).
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="search-setup") as setup:
        opening_store = setup.submit(_open_search_run, settings, space, resume)
        loading = setup.submit(_shared_splits, settings, base)
        _start_ray(settings)
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
        _check_resources(settings, ray.cluster_resources())
        _check_storage_visible(settings.runs_path / "ray")
        log(f"search {settings.name!r}: space {space.name}, {settings.searcher} + {settings.scheduler}, "
            f"{settings.num_samples} trials x {epochs} epochs, {settings.max_concurrent} at a time; "
            f"MLflow {settings.resolved_tracking_uri()}")
        trainable = _trainable(settings, base, context, shared_splits)
        experiment_path = settings.experiment_path
        started = time.perf_counter()
        if resume and not any(experiment_path.glob("experiment_state-*.json")) and settings.settings_file.is_file():
            # Killed before Ray Tune saved its first state (no trial had started): start afresh.
            log(f"search {settings.name!r} was stopped before its first trial started: starting it from the beginning")
            resume = False
        if resume:
            if not tune.Tuner.can_restore(str(experiment_path)):
                raise SearchError(f"nothing to resume at {experiment_path}")
            tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable, resume_errored=True,
                                       param_space=_param_space(settings, space))
        else:
            tune_config = _tune_config(settings, space, epochs)
            tuner = tune.Tuner(trainable, param_space=_param_space(settings, space), tune_config=tune_config,
                               run_config=_run_config(settings, context, epochs, tune_config.search_alg))
        # The best model is exported at the end with torch: import it while the trials train.
        threading.Thread(target=_import_quietly, args=("tune_lsd.embedder",), daemon=True).start()
        results = tuner.fit()
        # Ray's processes end (~1.5 s, mostly waiting) while the best model is exported and registered.
        ending_ray = threading.Thread(target=ray.shutdown, name="ray-shutdown")
        ending_ray.start()
        _deliver_left_over(settings, log)  # what trials could not deliver while the server was down
        summary = _summarise(settings, results, context, recorder, time.perf_counter() - started)
        summary["spooled_records"] = _close_recorder(settings, recorder, log)
        if summary["state"] == "interrupted":
            log(f"search {settings.name!r} was interrupted; continue it with: tune-lsd search --resume {settings.name}")
        else:
            _record_completion(settings, summary, log)
    except BaseException as error:
        if not recorder.closed:
            recorder.search_ended("interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
            _close_recorder(settings, recorder, log)
        raise
    finally:
        if ending_ray is not None:
            ending_ray.join()
        ray.shutdown()
    _print_summary(summary, log)
    if summary["trials"] and summary["errored"] == summary["trials"]:
        raise SearchError(f"all {summary['trials']} trials errored; the first: {summary['first_error']}")
    return summary


def resume_search(name: str, runs_dir: str = "runs", log=print) -> dict[str, Any]:
    """Continue a search whose driver died, from the settings it saved (a completed search
    is only reported: there is nothing to continue)."""
    settings = load_settings(name, runs_dir)
    completed = completion_record(settings)
    if completed is not None:
        log(f"search {name!r} is complete ({completed['trials']} trials, {completed['errored']} errored); "
            f"nothing to resume. Its results are in MLflow: tune-lsd report {name}")
        return completed
    return run_search(settings, resume=True, log=log)


def load_settings(name: str, runs_dir: str = "runs") -> SearchSettings:
    """The settings a search saved when it started."""
    settings_file = Path(runs_dir).resolve() / "searches" / name / "search.yaml"
    if not settings_file.is_file():
        raise SearchError(f"no search named {name!r} under {Path(runs_dir).resolve()} (looked for {settings_file})")
    return SearchSettings.model_validate(yaml.safe_load(settings_file.read_text()))


# --- disk: checkpoints of finished trials -------------------------------------------------------


def completion_record(settings: SearchSettings) -> dict[str, Any] | None:
    """What the search wrote when it completed (None while it has not)."""
    path = settings.settings_file.with_name(COMPLETED_FILE)
    return json.loads(path.read_text()) if path.is_file() else None


def prune_checkpoints(settings: SearchSettings, trial_ids: list[str] | None = None) -> tuple[int, int]:
    """Delete the Ray checkpoints of the given trials (all trials when None): their best models
    are in MLflow. Trial results (result.json, progress.csv) stay. Returns (folders, bytes) freed."""
    folders = freed = 0
    if not settings.experiment_path.is_dir():
        return 0, 0
    for trial_dir in settings.experiment_path.iterdir():
        if not trial_dir.is_dir() or (trial_ids is not None and not any(f"_{t}_" in trial_dir.name for t in trial_ids)):
            continue
        for checkpoint in trial_dir.glob("checkpoint_*"):
            freed += sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file())
            shutil.rmtree(checkpoint)
            folders += 1
    return folders, freed


def prune_search(name: str, runs_dir: str = "runs", log=print) -> tuple[int, int]:
    """``tune-lsd prune NAME``: delete the checkpoints of the search's finished trials.

    A completed search loses all of them; a search that may still be resumed keeps those of
    trials that have not finished (MLflow says which have: completed or stopped early).
    """
    settings = load_settings(name, runs_dir)
    trial_ids = None
    if completion_record(settings) is None:
        finished = ("completed", "stopped early")
        trial_ids = [run.data.tags[tracking.TRIAL_ID_TAG] for run in tracking.trial_runs(settings.resolved_tracking_uri(), name)
                     if run.data.tags.get(tracking.STATE_TAG) in finished]
    folders, freed = prune_checkpoints(settings, trial_ids)
    scope = "every trial (the search is complete)" if trial_ids is None else f"{len(trial_ids)} finished trials"
    log(f"search {name!r}: deleted {folders} checkpoints of {scope}, {freed / 2**20:.0f} MB freed")
    return folders, freed


def _record_completion(settings: SearchSettings, summary: dict[str, Any], log) -> None:
    """Mark the search complete (so --resume says so) and, unless asked to keep them, delete
    the trials' Ray checkpoints: every trial has ended and uploaded its best model to MLflow."""
    if not settings.keep_checkpoints:
        folders, freed = prune_checkpoints(settings)
        summary["checkpoints_deleted_mb"] = round(freed / 2**20, 1)
        if folders:
            where = "MLflow" if not summary.get("spooled_records") else "MLflow or on their way there (tune-lsd sync)"
            log(f"deleted {folders} trial checkpoints ({freed / 2**20:.0f} MB); the best models are in {where} "
                "(--keep-checkpoints keeps them)")
    record = {key: summary[key] for key in ("name", "state", "trials", "errored", "epochs_run", "wall_s")}
    record["registered"] = "registered_version" in summary  # else `tune-lsd sync` registers it
    settings.settings_file.with_name(COMPLETED_FILE).write_text(json.dumps(record, indent=1))


# --- pieces of the Tuner -----------------------------------------------------------------------


def _start_ray(settings: SearchSettings) -> None:
    # Save Tune's experiment state after every controller step (default: at most every 10 s),
    # so a driver killed right after a trial finished does not train that trial again on --resume.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    address = settings.address or os.environ.get("RAY_ADDRESS")
    if address:
        recorded = settings.runs_path / "cluster" / "nodes.json"
        if recorded.exists() and json.loads(recorded.read_text())["address"] == address:
            os.environ.setdefault("RAY_AUTH_MODE", json.loads(recorded.read_text())["auth"])  # as `cluster up` chose
        # Trials on other machines send the driver's MLflow credentials (a server with --auth).
        credentials = {k: os.environ[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if k in os.environ}
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": credentials} if credentials else None)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster
        # Trial output (Ray's per-checkpoint INFO lines) stays in the Ray session logs.
        store = settings.object_store_mb * 2**20 if settings.object_store_mb else None
        # Ray pre-starts one idle worker per CPU, but Tune's trials are actors, which Ray starts
        # in processes of their own: the idle workers only compete with the trials' start for the CPU.
        ray.init(address="local", include_dashboard=False, log_to_driver=False, object_store_memory=store,
                 _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False})


def _check_resources(settings: SearchSettings, resources: dict[str, float]) -> None:
    """Ray leaves trials PENDING forever when no node can host them: fail now instead."""
    if settings.gpus_per_trial > 0 and resources.get("GPU", 0) < settings.gpus_per_trial:
        raise SearchError(
            f"--gpus-per-trial {settings.gpus_per_trial} but the Ray cluster has {resources.get('GPU', 0):g} GPUs; "
            "use --gpus-per-trial 0 on a CPU machine or join a GPU cluster with --address")
    if resources.get("CPU", 0) < settings.cpus_per_trial:
        raise SearchError(f"--cpus-per-trial {settings.cpus_per_trial} but the Ray cluster has {resources.get('CPU', 0):g} CPUs")


def _check_storage_visible(storage: Path) -> None:
    """Every node must see the storage path (checkpoints are written there): check before trials start."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    storage.mkdir(parents=True, exist_ok=True)
    probe = storage / f".probe-{os.getpid()}-{time.time_ns()}"
    probe.write_text("tune_lsd")
    try:
        checks = {n["NodeManagerAddress"] + " " + n["NodeID"][:8]: _sees_path.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(str(probe))
            for n in nodes}
        blind = [node for node, seen in zip(checks, ray.get(list(checks.values()), timeout=120)) if not seen]
    finally:
        probe.unlink()
    if blind:
        raise SearchError(f"the storage path {storage} is not visible from node {blind[0]}: "
                          "use a folder shared by all nodes (NFS) with --runs-dir, or a cluster on one machine")


@ray.remote(num_cpus=0)
def _sees_path(path: str) -> bool:
    return Path(path).is_file()


def _open_search_run(settings: SearchSettings, space: SearchSpace, resume: bool) -> tracking.TrackingContext:
    """The search's MLflow parent run (the store is created on first use)."""
    context = tracking.start_search_run(
        settings.resolved_tracking_uri(), settings.name, _search_params(settings, space),
        settings.runs_path / "mlartifacts" if settings.tracking_uri is None else None, settings.spool_path)
    if resume:  # what the interrupted search could not deliver goes first
        tracking.deliver_spools(settings.spool_path)
    else:  # what was searched, for the report and for anyone reading the run later
        tracking.log_search_text(context, yaml.safe_dump(space.model_dump(), sort_keys=False), tracking.SPACE_ARTIFACT)
    return context


def _shared_splits(settings: SearchSettings, base):
    """The data splits every trial shares: decoded once here and put in Ray's object store
    once; trials on a node share one copy (None with --no-shared-data)."""
    return build_splits(base.data, base.seed) if settings.share_data else None


def _trainable(settings: SearchSettings, base, context: tracking.TrackingContext, shared):
    base_config = base.with_overrides({
        "runtime.threads": max(1, int(settings.cpus_per_trial)),
        "runtime.progress": False,
        "runtime.device": "cuda" if settings.gpus_per_trial > 0 else "cpu",
    }).to_dict()
    with_data = tune.with_parameters(DMLTrainable, base_config=base_config, tracking=context,
                                     select_metric=settings.metric, shared_splits=shared,
                                     finished_dir=str(settings.finished_path))
    return tune.with_resources(with_data, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})


def _param_space(settings: SearchSettings, space: SearchSpace) -> dict[str, Any] | None:
    return space.tune_param_space() if settings.scheduler == "pbt" else None


def optuna_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``--searcher``: TPE (with its random start-up trials) or random."""
    if settings.searcher == "optuna":
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=settings.seed,
                                          n_startup_trials=settings.tpe_startup_trials)
    return optuna.samplers.RandomSampler(seed=settings.seed)


def _tune_config(settings: SearchSettings, space: SearchSpace, epochs: int):
    search_alg = None
    if settings.scheduler != "pbt":
        searcher = ResumableOptunaSearch(space=space.optuna_space(), metric=settings.metric, mode=settings.mode,
                                         sampler=optuna_sampler(settings))
        search_alg = TrialCountedSearch(ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent))
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", max_t=epochs,
                                  grace_period=settings.grace_period, reduction_factor=settings.reduction_factor)
    elif settings.scheduler == "pbt":
        scheduler = PopulationBasedTraining(time_attr="training_iteration",
                                            perturbation_interval=settings.perturbation_interval,
                                            hyperparam_mutations=space.pbt_mutations())
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(metric=settings.metric, mode=settings.mode, search_alg=search_alg, scheduler=scheduler,
                           num_samples=settings.num_samples,
                           # (PBT's generator takes the limit; the searcher's is in its ConcurrencyLimiter)
                           max_concurrent_trials=settings.max_concurrent if search_alg is None else None,
                           time_budget_s=settings.time_budget_s,
                           # A finished trial's actor takes the next trial (and a PBT exploit
                           # continues in its own actor): no process start, imports or CUDA context
                           # per trial. reset_config rebuilds everything and refuses the actor when
                           # the previous trial's GPU memory was not released.
                           reuse_actors=True)


def _run_config(settings: SearchSettings, context: tracking.TrackingContext, epochs: int,
                search_alg: TrialCountedSearch | None):
    keep = 3 if settings.scheduler == "pbt" else 2
    return tune.RunConfig(
        name=settings.name,
        storage_path=str(settings.runs_path / "ray"),
        # A finished trial needs no checkpoint: its best model goes to MLflow when it ends.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=keep, checkpoint_score_attribute=settings.metric, checkpoint_score_order=settings.mode,
            checkpoint_frequency=settings.perturbation_interval if settings.scheduler == "pbt" else settings.checkpoint_every,
            checkpoint_at_end=False),
        # A GPU trial whose reused actor is refused (memory of the last trial still held) fails to
        # start; one retry gives it a fresh actor instead of losing it.
        failure_config=tune.FailureConfig(
            max_failures=max(settings.max_failures, 1) if settings.gpus_per_trial > 0 else settings.max_failures),
        callbacks=[*([TrialCountCallback(search_alg)] if search_alg is not None else []),
                   TrialStateCallback(context, epochs, str(settings.finished_path)),
                   ProgressCallback(settings.metric, epochs, settings.num_samples)],
        verbose=0,  # ProgressCallback prints one line per event instead of Tune's tables
    )


class TrialCountedSearch(SearchGenerator):
    """Ray's SearchGenerator, whose count of the trials it created follows Tune's trial list.

    Tune saves its trial list, then the searcher's state. A driver killed between the two
    restores a count that disagrees with the list, and the resumed search ends a trial short
    or long. :class:`TrialCountCallback` hands over the list's length at the start of every
    controller step (before Tune asks for new trials), so a search ends with ``num_samples``
    trials whatever the instant it was killed.
    """

    def follow(self, trials_in_tune: int) -> None:
        self._counter = trials_in_tune  # Ray's count of created trials (no public setter)


class TrialCountCallback(tune.Callback):
    """Keeps a :class:`TrialCountedSearch` in step with Tune's trial list (pickled with it by
    the Tuner, so a restored search keeps the pair)."""

    def __init__(self, search_alg: TrialCountedSearch) -> None:
        self.search_alg = search_alg

    def on_step_begin(self, iteration, trials, **info) -> None:
        self.search_alg.follow(len(trials))


class ResumableOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, tolerant of trials it does not know after ``--resume``.

    A driver killed between Tune writing its trial list and the searcher's state can come back
    with an in-flight trial that the restored searcher never suggested; Ray's OptunaSearch then
    raises KeyError on that trial's first result and the whole search stops. Such a trial still
    trains to the end; its result just does not inform the sampler.
    """

    def _knows(self, trial_id: str) -> bool:
        return trial_id in self._ot_trials or trial_id in self._completed_trials

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._knows(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._knows(trial_id):
            super().on_trial_complete(trial_id, result, error)


class ProgressCallback(tune.Callback):
    """One line per trial event instead of Tune's tables: start, every epoch, end."""

    def __init__(self, metric: str, epochs: int, num_samples: int, log=print) -> None:
        self.metric, self.epochs, self.num_samples, self.log = metric, epochs, num_samples, log
        self.started = time.perf_counter()
        self.trials_started = self.ended = 0

    def _prefix(self, trial) -> str:
        return f"[{time.perf_counter() - self.started:6.0f} s] {trial.trial_id}"

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.trials_started += 1
        sampled = ", ".join(f"{k}={_short(v)}" for k, v in sorted(trial.config.items()) if v is not None)
        self.log(f"{self._prefix(trial)} started ({self.trials_started}/{self.num_samples}): {sampled}")

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.log(f"{self._prefix(trial)} epoch {result.get('epoch')}/{self.epochs}  "
                 f"{self.metric} {result.get(self.metric, float('nan')):.4f}  "
                 f"(best {result.get('best/' + self.metric, float('nan')):.4f})  "
                 f"loss {result.get('train/loss', float('nan')):.4f}  {result.get('train/epoch_s', 0):.0f} s/epoch")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        epochs = (trial.last_result or {}).get("epoch", 0)
        how = "completed" if epochs >= self.epochs else f"stopped early after {epochs} epochs"
        self.log(f"{self._prefix(trial)} {how}  [{self.ended}/{self.num_samples} trials done]")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        self.log(f"{self._prefix(trial)} errored: {_error_line(trial)}  [{self.ended}/{self.num_samples} trials done]")


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class TrialStateCallback(tune.Callback):
    """Driver side: each trial's final state (and error) for its MLflow child run, spooled."""

    def __init__(self, context: tracking.TrackingContext, epochs: int, finished_dir: str | None = None) -> None:
        self.context = context
        self.epochs = epochs
        self.finished_dir = finished_dir

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        finished = (trial.last_result or {}).get("epoch", 0) >= self.epochs
        finished_dir = getattr(self, "finished_dir", None)  # (absent in callbacks pickled by older versions)
        if not finished and trial.last_result and finished_dir:  # the scheduler stopped it: never resume it
            record_finished(Path(finished_dir), trial.trial_id, trial.last_result)
        tracking.search_recorder(self.context).trial_ended(trial.trial_id, "completed" if finished else "stopped early")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        tracking.search_recorder(self.context).trial_ended(trial.trial_id, "errored", _error_line(trial),
                                                           has_run=bool(trial.last_result))


def _error_line(trial) -> str:
    """The last line of a trial's traceback: the exception and its message."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "trial failed (no error file)"


def _search_params(settings: SearchSettings, space: SearchSpace) -> dict[str, Any]:
    return {"space": space.name, "space_description": space.description, "dataset": space.base_config().data.dataset,
            "searcher": settings.searcher, "scheduler": settings.scheduler, "metric": settings.metric,
            "num_samples": settings.num_samples, "max_concurrent": settings.max_concurrent,
            **({"startup_trials": settings.tpe_startup_trials} if settings.searcher == "optuna" else {}),
            "overrides": " ".join(settings.overrides), "code_version": f"{__version__} ({_git_revision()})"}


def _git_revision() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).parent).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _summarise(settings: SearchSettings, results, context: tracking.TrackingContext,
               recorder: tracking.SearchRecorder, wall_s: float) -> dict[str, Any]:
    epochs_run = [r.metrics.get("training_iteration", 0) for r in results if r.metrics]
    errors = [r for r in results if r.error is not None]
    summary: dict[str, Any] = {
        "name": settings.name, "trials": len(results), "errored": len(errors),
        "epochs_run": sum(epochs_run), "wall_s": round(wall_s, 1),
        "tracking_uri": settings.resolved_tracking_uri(), "ray_results": str(settings.runs_path / "ray" / settings.name),
        "first_error": str(errors[0].error).strip().splitlines()[-1] if errors else None,
    }
    summary.update(_best_and_champion(settings, context))
    # Ray Tune returns normally from an interrupted fit (Ctrl-C), its running trials marked
    # terminated: a trial ended only if it errored or left its final result (trainables.dml).
    finished = {path.stem for path in settings.finished_path.glob("*.json")}
    ended = all(r.error is not None or (r.metrics or {}).get("trial_id") in finished for r in results)
    if settings.time_budget_s is not None:  # the budget stops trials where they are: that is their end
        ended = results.num_terminated + results.num_errors == len(results)
    complete = ended and (len(results) >= settings.num_samples or settings.time_budget_s is not None)
    state = ("completed" if not errors else "completed with errors") if complete else "interrupted"
    recorder.search_ended(state, {"best/" + settings.metric: summary.get("best_value", 0.0),
                                  "trials": len(results), "errored_trials": len(errors)})
    summary["state"] = state
    return summary


def _deliver_left_over(settings: SearchSettings, log) -> None:
    """Deliver what trials left in their spools (the server was down when they ended)."""
    try:
        tracking.deliver_spools(settings.spool_path, log=log, skip=[tracking.SEARCH_SPOOL])
    except tracking.TrackingError:
        pass  # the server is still down: _close_recorder says what is kept and how to deliver it


def _close_recorder(settings: SearchSettings, recorder: tracking.SearchRecorder, log) -> int:
    """Deliver the driver's records; returns the records of the search left undelivered."""
    recorder.close()
    left, spools = tracking.spooled_records(settings.spool_path)
    tracking.remove_if_empty(settings.spool_path)
    if left:
        log(f"warning: the tracking server {settings.resolved_tracking_uri()} did not take {left} records "
            f"({spools} spools, last error: {recorder.writer.last_error}); they are kept in {settings.spool_path}. "
            f"Deliver them once it is back with: tune-lsd sync {settings.name}")
    return left


def _best_and_champion(settings: SearchSettings, context: tracking.TrackingContext) -> dict[str, Any]:
    """The best trial in MLflow and its model registered as ``<name>-best@champion`` (empty
    when MLflow has no trial results, e.g. the tracking server was down)."""
    try:
        tracking.check_tracking_uri(settings.resolved_tracking_uri(), timeout_s=5)
        best = tracking.best_trial_run(settings.resolved_tracking_uri(), settings.name, settings.metric, settings.mode)
    except tracking.TrackingError:
        return {}
    key = tracking.mlflow_key(f"best/{settings.metric}")
    found = {"best_trial": best.info.run_name, "best_run_id": best.info.run_id, "best_value": best.data.metrics[key],
             "best_params": json.loads(best.data.tags.get(tracking.SAMPLED_TAG, "{}")),
             "registered_model": f"{settings.name}-best"}
    try:
        found["registered_version"] = _log_champion(context, best.info.run_id, found["registered_model"])
    except Exception as error:  # the registry is a convenience: never lose a finished search over it
        found["registry_error"] = first_line(error)
    return found


def sync_search(name: str, runs_dir: str = "runs", log=print) -> int:
    """``tune-lsd sync NAME``: deliver what the search kept on disk while its tracking server
    was down (metrics, params, checkpoints, trial states); then, for a completed search whose
    best model was not registered, register it. Returns the number of records delivered."""
    settings = load_settings(name, runs_dir)
    left, spools = tracking.spooled_records(settings.spool_path)
    uri = settings.resolved_tracking_uri()
    delivered = tracking.deliver_spools(settings.spool_path, log=log) if left else 0
    log(f"search {name!r}: {delivered} records of {spools} spools delivered to {uri}" if left else
        f"search {name!r}: nothing to deliver, every record is in {uri}")
    completed = completion_record(settings)
    if completed is not None and not completed.get("registered"):
        parent = tracking.search_parent_run(uri, name)
        found = _best_and_champion(settings, tracking.TrackingContext(uri, parent.info.experiment_id, parent.info.run_id))
        if "registered_version" in found:
            completed["registered"] = True
            settings.settings_file.with_name(COMPLETED_FILE).write_text(json.dumps(completed, indent=1))
            log(f"registered the best trial {found['best_trial']} ({settings.metric} {found['best_value']:.4f}) "
                f"as models:/{found['registered_model']}@champion")
        elif "registry_error" in found:
            log(f"warning: the best model was not registered: {found['registry_error']}")
    return delivered


def _import_quietly(module: str) -> None:
    """Import ``module`` ahead of its use; a failure shows later, where it is used."""
    try:
        importlib.import_module(module)
    except Exception:
        pass


def _log_champion(context: tracking.TrackingContext, run_id: str, model_name: str) -> int:
    """The best trial's model as an MLflow pyfunc model, registered as ``model_name@champion``."""
    from tune_lsd import embedder  # torch and timm: imported in a thread while the trials trained
    from tune_lsd.engine import load_model_state

    with tempfile.TemporaryDirectory() as folder:
        snapshot = load_model_state(tracking.download_trial_model(context.tracking_uri, run_id, Path(folder)))
        files, description = embedder.write_model_files(snapshot, Path(folder) / "model")
        return tracking.log_best_model(context, run_id, model_name, files, embedder.example_images(snapshot),
                                       description)


def _print_summary(summary: dict[str, Any], log) -> None:
    log(f"\nsearch {summary['name']!r} {summary['state']}: {summary['trials']} trials "
        f"({summary['errored']} errored), {summary['epochs_run']} epochs in {summary['wall_s']} s")
    if "best_value" in summary:
        log(f"best trial {summary['best_trial']}: {summary['best_value']:.4f}")
        for key, value in sorted(summary["best_params"].items()):
            log(f"  {key} = {value}")
    log(f"MLflow: {summary['tracking_uri']}    Ray results: {summary['ray_results']}")
    if "registered_version" in summary:
        log(f"the best model, in Python (needs torch, numpy and mlflow; not tune_lsd):\n"
            f"  import mlflow\n"
            f"  mlflow.set_tracking_uri({summary['tracking_uri']!r})\n"
            f"  model = mlflow.pyfunc.load_model('models:/{summary['registered_model']}@champion')"
            f"  # model.predict(uint8 images N x H x W x C) -> embeddings")
    elif "registry_error" in summary:
        log(f"warning: the best model was not registered in MLflow: {summary['registry_error']}")
    log(f"next: tune-lsd export --experiment {summary['name']} -o best.yaml && tune-lsd train --config best.yaml")

