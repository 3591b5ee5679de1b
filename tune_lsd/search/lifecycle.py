"""A search after its trials: completion, pruning checkpoints, delivering what was spooled.

- :func:`record_completion`: ``completed.json`` next to ``search.yaml`` (``--resume`` then
  says there is nothing to continue) and the trials' Ray checkpoints deleted.
- :func:`prune_search`: ``tune-lsd prune NAME``, the checkpoints of finished trials.
- :func:`sync_search`: ``tune-lsd sync NAME``, what a tracking server that was down missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tune_lsd import tracking
from tune_lsd.search.champion import best_and_champion
from tune_lsd.search.settings import SearchSettings, load_settings


def completion_record(settings: SearchSettings) -> dict[str, Any] | None:
    """What the search wrote when it completed (None while it has not)."""
    record = settings.completion_location
    return json.loads(record.read_text()) if record.exists() else None


def record_completion(
    settings: SearchSettings, summary: dict[str, Any], context: tracking.TrackingContext, log
) -> None:
    """Mark the search complete (so --resume says so), delete the models of the trials beyond
    its best ``--keep-models`` and, unless asked to keep them, the trials' Ray checkpoints:
    every trial has ended and uploaded its best model to MLflow."""
    summary["models_deleted"] = delete_models_beyond_best(settings, context, log)[0]
    if not settings.keep_checkpoints:
        folders, freed = prune_checkpoints(settings)
        summary["checkpoints_deleted_mb"] = round(freed / 2**20, 1)
        if folders:
            where = "MLflow" if not summary.get("spooled_records") else "MLflow or on their way there (tune-lsd sync)"
            log(
                f"deleted {folders} trial checkpoints ({freed / 2**20:.0f} MB); the best models are in {where} "
                "(--keep-checkpoints keeps them)"
            )
    record = {key: summary[key] for key in ("name", "state", "trials", "errored", "epochs_run", "wall_s")}
    record["registered"] = "registered_version" in summary  # else `tune-lsd sync` registers it
    settings.completion_location.write_text(json.dumps(record, indent=1))


def delete_models_beyond_best(
    settings: SearchSettings, context: tracking.TrackingContext, log, keep: int | None = None
) -> tuple[int, int]:
    """The models of the search's ended trials beyond its best ``keep`` (default: its
    ``--keep-models``; 0 keeps all) deleted from MLflow, with one line; (models, bytes)."""
    keep = settings.keep_models if keep is None else keep
    if not keep:
        return 0, 0
    try:
        deleted, freed = tracking.keep_best_models(context, settings.metric, settings.mode, keep)
    except tracking.TrackingError as error:
        log(f"warning: the models of trials beyond the best {keep} were not deleted: {error}")
        return 0, 0
    if deleted:
        log(
            f"MLflow: deleted the models of {deleted} trial{'s' * (deleted != 1)} beyond the best {keep} "
            f"({freed / 2**20:.0f} MB); their metrics and configs stay (--keep-models N)"
        )
    return deleted, freed


def prune_checkpoints(settings: SearchSettings, trial_ids: list[str] | None = None) -> tuple[int, int]:
    """Delete the Ray checkpoints of the given trials (all trials when None): their best models
    are in MLflow. Trial results (result.json, progress.csv) stay. Returns (folders, bytes) freed."""
    folders = freed = 0
    for experiment in settings.all_experiment_locations():
        for trial_dir in experiment.folders():
            if trial_ids is not None and not any(f"_{t}_" in trial_dir for t in trial_ids):
                continue
            for name in (experiment / trial_dir).folders():
                if name.startswith("checkpoint_"):
                    checkpoint = experiment / trial_dir / name
                    freed += checkpoint.size()[1]
                    checkpoint.delete()
                    folders += 1
    return folders, freed


def prune_search(
    name: str, runs_dir: str = "runs", log=print, storage: str | None = None, keep_models: int | None = None
) -> tuple[int, int]:
    """``tune-lsd prune NAME``: delete the checkpoints of the search's finished trials, and the
    models in MLflow of its ended trials beyond the best ``keep_models`` (default: the search's
    ``--keep-models``). Returns the checkpoints' (folders, bytes).

    A completed search loses all its checkpoints; a search that may still be resumed keeps those
    of trials that have not finished (MLflow says which have: completed or stopped early).
    """
    settings = load_settings(name, runs_dir, storage)
    try:
        context = tracking.search_context(settings.resolved_tracking_uri(), name)
    except tracking.TrackingError as error:
        log(f"warning: no model in MLflow was deleted: {error}")
    else:
        delete_models_beyond_best(settings, context, log, keep_models)
    trial_ids = None
    if completion_record(settings) is None:
        finished = ("completed", "stopped early")
        trial_ids = [
            run.data.tags[tracking.TRIAL_ID_TAG]
            for run in tracking.trial_runs(settings.resolved_tracking_uri(), name)
            if run.data.tags.get(tracking.STATE_TAG) in finished
        ]
    folders, freed = prune_checkpoints(settings, trial_ids)
    scope = "every trial (the search is complete)" if trial_ids is None else f"{len(trial_ids)} finished trials"
    log(f"search {name!r}: deleted {folders} checkpoints of {scope}, {freed / 2**20:.0f} MB freed")
    return folders, freed


def deliver_left_over(settings: SearchSettings, log, driver_node: str | None = None) -> None:
    """Deliver what trials on this machine left in their spools (the server was down when they
    ended), and say which other nodes keep records of theirs (see :func:`undelivered_elsewhere`)."""
    try:
        tracking.deliver_spools(settings.spool_path, log=log, skip=[tracking.SEARCH_SPOOL])
    except tracking.TrackingError:
        pass  # the server is still down: close_recorder says what is kept and how to deliver it
    if driver_node is not None:
        undelivered_elsewhere(settings, driver_node, log)


def undelivered_elsewhere(settings: SearchSettings, driver_node: str, log) -> int:
    """Trials record a marker in the storage while their spool holds records (the trainable's
    ``_mark_spool``). Those of this node whose spool is gone were delivered: their markers go.
    Those of other nodes are named, with the command to run there; returns how many."""
    by_node: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for marker in _markers(settings):
        if marker["node_id"] == driver_node:
            if not Path(marker["spool"]).exists():
                (settings.undelivered_location / f"{marker['trial_id']}.json").delete()
        else:
            by_node.setdefault((marker["node_ip"], marker["node_id"]), []).append(marker)
    storage = f" --storage {settings.storage}" if settings.storage else ""
    for (node_ip, node_id), markers in sorted(by_node.items()):
        trials = ", ".join(sorted(m["trial_id"] for m in markers))
        count = f"{len(markers)} trial{'s' if len(markers) > 1 else ''}"
        log(
            f"warning: node {node_ip} ({node_id[:8]}) keeps tracking records of {count} ({trials}) "
            f"that {settings.resolved_tracking_uri()} did not take, in {Path(markers[0]['spool']).parent}; "
            f"once it is back, run on that node: tune-lsd sync {settings.name}{storage}"
        )
    return sum(len(markers) for markers in by_node.values())


def _markers(settings: SearchSettings) -> list[dict[str, Any]]:
    folder = settings.undelivered_location
    return [json.loads((folder / name).read_text()) for name in folder.names(".json")]


def close_recorder(settings: SearchSettings, recorder: tracking.SearchRecorder, log) -> int:
    """Deliver the driver's records; returns the records of the search left undelivered."""
    recorder.close()
    left, spools = tracking.spooled_records(settings.spool_path)
    tracking.remove_if_empty(settings.spool_path)
    if left:
        log(
            f"warning: the tracking server {settings.resolved_tracking_uri()} did not take {left} records "
            f"({spools} spools, last error: {recorder.writer.last_error}); they are kept in {settings.spool_path}. "
            f"Deliver them once it is back with: tune-lsd sync {settings.name}"
        )
    return left


def sync_search(name: str, runs_dir: str = "runs", log=print, storage: str | None = None) -> int:
    """``tune-lsd sync NAME``: deliver what the search kept on disk while its tracking server
    was down (metrics, params, checkpoints, trial states); then, for a completed search, keep
    only the models of its best ``--keep-models`` trials and, if its best model was not
    registered, register it. Returns the number of records delivered."""
    settings = load_settings(name, runs_dir, storage)
    # This machine's spools: the runs folder's, and those trials of the search left here (their
    # markers name the folder: on another node of a cluster it is the driver's path).
    markers = [m for m in _markers(settings) if Path(m["spool"]).exists()]
    folders = sorted({settings.spool_path, *(Path(m["spool"]).parent for m in markers)})
    counts = [tracking.spooled_records(folder) for folder in folders]
    left, spools = sum(c[0] for c in counts), sum(c[1] for c in counts)
    uri = settings.resolved_tracking_uri()
    delivered = sum(tracking.deliver_spools(folder, log=log) for folder in folders) if left else 0
    for marker in markers:
        if not Path(marker["spool"]).exists():
            (settings.undelivered_location / f"{marker['trial_id']}.json").delete()
    log(
        f"search {name!r}: {delivered} records of {spools} spools delivered to {uri}"
        if left
        else f"search {name!r}: nothing to deliver, every record is in {uri}"
    )
    completed = completion_record(settings)
    if completed is None or (not delivered and completed.get("registered")):
        return delivered
    context = tracking.search_context(uri, name)
    if delivered:  # models that arrived late: only the best trials' stay
        delete_models_beyond_best(settings, context, log)
    if not completed.get("registered"):
        found = best_and_champion(settings, context)
        if "registered_version" in found:
            completed["registered"] = True
            settings.completion_location.write_text(json.dumps(completed, indent=1))
            log(
                f"registered the best trial {found['best_trial']} ({settings.metric} {found['best_value']:.4f}) "
                f"as models:/{found['registered_model']}@champion"
            )
        elif "registry_error" in found:
            log(f"warning: the best model was not registered: {found['registry_error']}")
    return delivered
