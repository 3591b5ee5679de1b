"""Ray for a search: started locally or joined, and checked before any trial starts."""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from pathlib import Path

import ray

from tune_lsd import tracking
from tune_lsd.search.failed_restore import refuse_fresh_restarts
from tune_lsd.search.settings import SearchError, SearchSettings
from tune_lsd.search.stale_checkpoints import quiet_stale_deletions
from tune_lsd.search.state_saves import save_state_on_period_only
from tune_lsd.storage import Location, StorageError

# Ray's runtime-env agent logs every actor's environment variables at INFO, in each node's
# session logs, and Ray Tune hands the driver's AWS credentials to every trial that way: the
# processes of the nodes tune_lsd starts log from WARNING on (docs/cluster.md: for `ray start`).
QUIET_RAY_LOGS = "warning"

# What trials on other machines need from the driver's environment: MLflow's credentials (a
# server with --auth) and the object store's (AWS's standard variables). Sent through Ray's
# runtime environment, never written to the search's files or logs by tune_lsd.
FORWARDED_VARIABLES = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


def cluster_address(settings: SearchSettings) -> str | None:
    """The Ray cluster the search joins (``--address``, else ``RAY_ADDRESS``); None: a private local Ray."""
    return settings.address or os.environ.get("RAY_ADDRESS")


def end_ray_in_background() -> threading.Thread:
    """Start ``ray.shutdown()`` on a thread (Ray's processes take ~1.5 s to end, mostly waiting)
    while the caller goes on; :func:`wait_for_ray_end` joins it.

    Python's cyclic garbage collector stays off meanwhile: a collection that frees an actor
    handle or an object reference while the core worker is half shut down makes Ray end the
    whole process with exit code 1 ("... accesses the Ray's worker after it is shutdown"; seen
    once in CI, in a search whose trials all errored: their tracebacks hold such cycles). What
    the search left in cycles is collected first, while Ray is whole."""
    gc.collect()
    gc.disable()
    thread = threading.Thread(target=ray.shutdown, name="ray-shutdown")
    thread.start()
    return thread


def wait_for_ray_end(thread: threading.Thread) -> None:
    """Wait until :func:`end_ray_in_background`'s shutdown is over; the collector is back on."""
    try:
        thread.join()
    finally:
        gc.enable()


def forwarded_credentials() -> dict[str, str]:
    """The driver's credentials as the environment variables the trials on other machines get:
    :data:`FORWARDED_VARIABLES` from its environment, else what the usual files hold
    (``~/.mlflow/credentials``; ``~/.aws/credentials`` or ``~/.aws/config``, of ``AWS_PROFILE``),
    which the other machines do not have. Credentials a machine gets by itself (a cloud VM's
    role) are not forwarded: each node gets its own, renewed."""
    forwarded = {k: os.environ[k] for k in FORWARDED_VARIABLES if k in os.environ}
    if "MLFLOW_TRACKING_USERNAME" not in forwarded:
        username, password = tracking.client_credentials()
        if username and password:
            forwarded.update(MLFLOW_TRACKING_USERNAME=username, MLFLOW_TRACKING_PASSWORD=password)
    if "AWS_ACCESS_KEY_ID" not in forwarded:
        from botocore.session import Session

        providers = Session().get_component("credential_provider")
        for name in ("shared-credentials-file", "config-file"):
            found = providers.get_provider(name).load()
            if found is not None:
                forwarded.update(AWS_ACCESS_KEY_ID=found.access_key, AWS_SECRET_ACCESS_KEY=found.secret_key)
                if found.token:
                    forwarded["AWS_SESSION_TOKEN"] = found.token
                break
    return forwarded


def start_ray(settings: SearchSettings) -> None:
    """A private local Ray (the default), or the cluster at ``--address`` / ``RAY_ADDRESS``."""
    # Ray Tune saves its experiment state on its own period (TUNE_GLOBAL_CHECKPOINT_S, "auto":
    # every 10 s or 19x the time a save takes), not after every step: the state grows with the
    # trials. What a driver killed between two saves leaves is settled on --resume: a finished
    # trial replays its recorded result (trainables.finished), and the MLflow run of a trial
    # the saved state does not name is deleted (tracking.discard_lost_trial_runs).
    save_state_on_period_only()  # (not also whenever a trial has made num_to_keep checkpoints)
    quiet_stale_deletions()
    refuse_fresh_restarts()  # (a resumed search whose saved state cannot be read is restored again)
    address = cluster_address(settings)
    if address:
        recorded = settings.runs_path / "cluster" / "nodes.json"
        if recorded.exists() and json.loads(recorded.read_text())["address"] == address:
            os.environ.setdefault("RAY_AUTH_MODE", json.loads(recorded.read_text())["auth"])  # as `cluster up` chose
        credentials = forwarded_credentials()
        ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": credentials} if credentials else None)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private local cluster
        os.environ.setdefault("RAY_LOGGER_LEVEL", QUIET_RAY_LOGS)
        # Trial output (Ray's per-checkpoint INFO lines) stays in the Ray session logs.
        store = settings.object_store_mb * 2**20 if settings.object_store_mb else None
        # Ray pre-starts one idle worker per CPU, but Tune's trials are actors, which Ray starts
        # in processes of their own: the idle workers only compete with the trials' start for the CPU.
        ray.init(
            address="local",
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=store,
            _system_config={"enable_worker_prestart": False, "prestart_worker_first_driver": False},
        )


def check_resources(settings: SearchSettings, resources: dict[str, float]) -> None:
    """Ray leaves trials PENDING forever when no node can host them: fail now instead."""
    if settings.gpus_per_trial > 0 and resources.get("GPU", 0) < settings.gpus_per_trial:
        raise SearchError(
            f"--gpus-per-trial {settings.gpus_per_trial} but the Ray cluster has {resources.get('GPU', 0):g} GPUs; "
            "use --gpus-per-trial 0 on a CPU machine or join a GPU cluster with --address"
        )
    if resources.get("CPU", 0) < settings.cpus_per_trial:
        raise SearchError(
            f"--cpus-per-trial {settings.cpus_per_trial} but the Ray cluster has {resources.get('CPU', 0):g} CPUs"
        )


def smallest_object_store() -> int | None:
    """Bytes of the smallest object store among the cluster's live nodes: shared data is held
    once per node that runs a trial, so it must fit the smallest one."""
    sizes = [node["Resources"].get("object_store_memory", 0) for node in ray.nodes() if node["Alive"]]
    return int(min(sizes)) if sizes and min(sizes) > 0 else None


def check_storage_visible(storage: Location) -> None:
    """Every node writes checkpoints to the storage: check from each node that it sees the
    storage folder (local / NFS) or can write to it (object storage) before any trial starts."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) < 2:
        return
    probe = None
    if not storage.is_remote:
        storage.local_path.mkdir(parents=True, exist_ok=True)
        probe = storage.local_path / f".probe-{os.getpid()}-{time.time_ns()}"
        probe.write_text("tune_lsd")
    try:
        checks = {
            n["NodeManagerAddress"] + " " + n["NodeID"][:8]: _node_check.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(storage, str(probe) if probe else None)
            for n in nodes
        }
        problems = {
            node: problem for node, problem in zip(checks, ray.get(list(checks.values()), timeout=120)) if problem
        }
    finally:
        if probe is not None:
            probe.unlink()
    if problems:
        node, problem = next(iter(problems.items()))
        if storage.is_remote:
            raise SearchError(f"node {node} cannot use the storage: {problem}")
        raise SearchError(
            f"the storage path {storage.uri} is not visible from node {node}: use a folder shared by "
            "all nodes (NFS) or object storage (--storage s3://...), or a cluster on one machine"
        )


@ray.remote(num_cpus=0)
def _node_check(storage: Location, probe: str | None) -> str | None:
    """On one node: None when it sees ``probe`` (local storage) or can write to the storage, else why not."""
    if probe is not None:
        return None if Path(probe).is_file() else "not visible"
    try:
        storage.check_writable()
    except StorageError as error:
        return str(error)
    return None
