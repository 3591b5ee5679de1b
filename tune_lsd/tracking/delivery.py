"""Records on their way to MLflow: the trial tracker, the driver's recorder, and delivery.

What trials (and the search driver, for trial states) record goes through a spool
(:mod:`tune_lsd.tracking.spool`): written to disk under the search's folder, delivered by a
background thread with retries, so a tracking server that is down never slows an epoch and
loses nothing. What a server that stayed down did not receive is delivered later by
:func:`deliver_spools` (``tune-lsd sync NAME``, and ``--resume``).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from tune_lsd.errors import first_line
from tune_lsd.tracking.names import CHECKPOINT_DIR, MODEL_TAG, mlflow_key, param_value
from tune_lsd.tracking.runs import end_search_run, end_trial_run, open_trial_run, record_node
from tune_lsd.tracking.spool import Spool, SpoolWriter, spools_under
from tune_lsd.tracking.store import TrackingContext, TrackingError, check_tracking_uri

SEARCH_SPOOL = "_search"  # the driver's spool (trial states, the search's end), delivered after the trials'
CLOSE_TIMEOUT_S = 300.0  # the longest a trial's end waits for its records to reach a server that answers


class TrialTracker:
    """The child run of one trial: params once, metrics every epoch, best checkpoint at the end.

    Every call returns at once: records go to the trial's spool and a background thread
    delivers them. :meth:`close` at the trial's end waits for them (see :class:`SpoolWriter`).
    """

    def __init__(
        self,
        context: TrackingContext,
        trial_id: str,
        trial_name: str,
        flat_config: dict[str, Any],
        sampled: dict[str, Any],
        node_id: str,
    ) -> None:
        """Open (or, for a restarted trial, reopen) the trial's run; ``node_id`` is recorded in
        the tag ``tune_lsd.nodes`` with the first epoch (every node the trial trained on, in order)."""
        self.trial_id = trial_id
        # One spool per process: Ray Tune can start a trial in a new actor and then hand it to a
        # reused one, stopping the first, whose end must not remove the spool the trial goes on in.
        spool = Spool(
            context.spool_folder(f"{trial_id}.{os.getpid()}"),
            initial_state={"context": asdict(context), "trial_id": trial_id},
        )
        self.writer = SpoolWriter(spool, functools.partial(deliver_records, files=spool.files))
        self.writer.append(
            {
                "op": "open",
                "trial_name": trial_name,
                "node_id": node_id,
                "params": {k: param_value(v) for k, v in flat_config.items()},
                "sampled": json.dumps(sampled, sort_keys=True),
            }
        )

    @property
    def run_id(self) -> str | None:
        """The MLflow run's id, once the run was created (see :meth:`flush`)."""
        return self.writer.spool.state.get("run_id")

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {mlflow_key(k): float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        self.writer.append({"op": "metrics", "step": step, "timestamp": int(time.time() * 1000), "values": values})

    def log_text(self, text: str, artifact_file: str) -> None:
        self.writer.append({"op": "text", "text": text, "artifact_file": artifact_file})

    def log_checkpoint(self, write: Callable[[Path], None]) -> None:
        """``write(folder)`` fills a folder, which becomes the run's checkpoint artifact."""
        name = f"upload-{self.writer.spool.appended}"
        write(_fresh_folder(self.writer.spool.files / name))
        self.writer.append({"op": "upload", "folder": name, "artifact_path": CHECKPOINT_DIR})

    def flush(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Wait for the records so far to be delivered; returns how many are not (server down)."""
        return self.writer.flush(timeout_s)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> int:
        """Deliver what is left and stop; returns the records kept on disk for ``tune-lsd sync``."""
        return self.writer.close(timeout_s)


class SearchRecorder:
    """The driver's records: each trial's final state, then the search's end (spooled too)."""

    def __init__(self, context: TrackingContext) -> None:
        self.context = context
        self.final = False  # set by close(): the trials' spools were delivered before it
        spool = Spool(context.spool_folder(SEARCH_SPOOL), initial_state={"context": asdict(context)})
        self.writer = SpoolWriter(
            spool, lambda records, state: deliver_records(records, state, spool.files, self.final)
        )

    def trial_ended(self, trial_id: str, state: str, reason: str | None = None, has_run: bool = True) -> None:
        """``state``: completed | stopped early | errored. ``has_run``: the trial reported results."""
        self.writer.append(
            {
                "op": "trial_state",
                "trial_id": trial_id,
                "state": state,
                "reason": reason,
                "has_run": has_run,
                "time": time.time(),
            }
        )

    def search_ended(self, state: str, summary: dict[str, float] | None = None) -> None:
        self.writer.append({"op": "finish", "state": state, "summary": summary or {}})

    def close(self, timeout_s: float = 60.0) -> int:
        """Deliver what is left (call it after the trials' spools were delivered)."""
        self.final = True
        return self.writer.close(timeout_s)

    @property
    def closed(self) -> bool:
        return self.writer.closed


_recorders: dict[str, SearchRecorder] = {}


def search_recorder(context: TrackingContext) -> SearchRecorder:
    """This process's recorder of the search ``context`` (opened on first use, again after a
    close). Callbacks find it here: Ray Tune pickles them, and a thread cannot be pickled."""
    recorder = _recorders.get(context.parent_run_id)
    if recorder is None or recorder.closed:
        recorder = _recorders[context.parent_run_id] = SearchRecorder(context)
    return recorder


def deliver_records(records: list[dict[str, Any]], state: dict[str, Any], files: Path, final: bool = True) -> None:
    """Send spooled records (all of one ``op``) to MLflow; the spool calls this. ``state`` holds
    the search's context and, once created, the trial's run id. Raises on any failure."""
    context = TrackingContext(**state["context"])
    client = MlflowClient(context.tracking_uri)
    op = records[0]["op"]
    if op == "open":
        state["run_id"], state["epochs_logged"] = open_trial_run(
            client, context, state["trial_id"], records[0], state.get("run_id")
        )
        state["node_id"] = records[0]["node_id"]
    elif op == "metrics":
        # A restarted trial trains again from the last checkpoint Ray Tune had recorded, which can
        # be older than the last epoch its run got (a driver killed in between): an epoch the run
        # has is not logged twice (the engine seeds every epoch: on a CPU the values are the same).
        logged = set(state.get("epochs_logged", ()))
        points = [
            Metric(k, v, r["timestamp"], r["step"])
            for r in records
            if r["step"] not in logged
            for k, v in r["values"].items()
        ]
        if "node_id" in state:  # the trial's first epoch on this node
            record_node(client, state["run_id"], state["node_id"])
            del state["node_id"]  # (only once recorded: a failed request is tried again)
        for start in range(0, len(points), 1000):  # MLflow takes at most 1000 metrics per request
            client.log_batch(state["run_id"], metrics=points[start : start + 1000])
    elif op == "text":
        client.log_text(state["run_id"], records[0]["text"], records[0]["artifact_file"])
    elif op == "upload":
        folder = files / records[0]["folder"]
        if folder.is_dir():  # gone: delivered before a crash kept the spool from counting it
            client.log_artifacts(state["run_id"], str(folder), records[0]["artifact_path"])
            if records[0]["artifact_path"] == CHECKPOINT_DIR:  # (what --keep-models looks for)
                client.set_tag(state["run_id"], MODEL_TAG, "uploaded")
            shutil.rmtree(folder)
    elif op == "trial_state":
        end_trial_run(client, context, records[0], final=final)
    elif op == "finish":
        end_search_run(client, context, records[0])
    else:
        raise ValueError(f"unknown spool record {op!r}")


def deliver_spools(spool_dir: Path, log=print, skip: Sequence[str] = ()) -> int:
    """Deliver every spooled record under ``spool_dir`` (the trials' spools, then the driver's;
    none named in ``skip``), deleting each spool once delivered; returns how many records were
    delivered. Raises TrackingError (one line) when the server does not take them; what was
    delivered stays delivered."""
    spools = sorted(
        (s for s in spools_under(spool_dir) if s.folder.name not in skip), key=lambda s: s.folder.name == SEARCH_SPOOL
    )
    delivered = 0
    checked: set[str] = set()  # (every spool of a search names the same server: ask it once)
    for spool in spools:
        if "context" not in spool.state:  # its removal was killed half-way (before spools were renamed aside)
            log(f"removed {spool.folder.name}: a delivered spool whose removal was interrupted")
            spool.remove()
            continue
        context = TrackingContext(**spool.state["context"])
        if context.tracking_uri not in checked:
            check_tracking_uri(context.tracking_uri, timeout_s=5)
            checked.add(context.tracking_uri)
        try:
            count = spool.deliver_pending(functools.partial(deliver_records, files=spool.files))
        except Exception as error:
            raise TrackingError(
                f"delivering {spool.folder} to {context.tracking_uri} failed: {first_line(error, 200)}"
            ) from None
        spool.remove()
        delivered += count
        if count:
            log(f"delivered {count} spooled records of {spool.folder.name} to {context.tracking_uri}")
    remove_if_empty(spool_dir)
    return delivered


def spooled_records(spool_dir: Path) -> tuple[int, int]:
    """(records not yet delivered, spools holding them) under ``spool_dir``."""
    counts = [len(spool.pending(limit=10**9)) for spool in spools_under(spool_dir)]
    return sum(counts), sum(1 for c in counts if c)


def remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _fresh_folder(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder
