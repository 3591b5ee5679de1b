"""``DMLTrainable``: a Ray Tune class trainable around :class:`tune_lsd.engine.Trainer`.

One ``step()`` is one epoch plus validation metrics. The trial's config holds only the
sampled dotted keys (``{"lsd.weight": 12.3, ...}``); they are applied to the search's base
config, so every hyperparameter of the schema can be searched. There is no second training
loop here: everything is the engine's.

Tracking: the trial logs to its own MLflow child run (params once, metrics every epoch) and,
when it ends, uploads its best-so-far model (weights + config + history) as the run's
``checkpoint`` artifact. The records go through the trial's spool (tune_lsd.tracking.spool): an epoch
never waits for the tracking server. Final states (completed / stopped early / errored) are
set by the driver's callback in tune_lsd.search.callbacks, which knows why a trial ended.

The engine (and with it torch and timm) is imported in the trial's process when the trial
starts: the search driver imports this module without them, ~3 s less per search.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
from ray import tune

from trainables.checkpoints import whole_result, write_manifest
from trainables.finished import REPLAYED, finished_result, record_finished
from trainables.uploads import UploadOutage
from tune_lsd.config import Config, apply_overrides
from tune_lsd.data.splits import DataSplits, split_key
from tune_lsd.storage import Location, is_transient, retrying
from tune_lsd.tracking import MODEL_FILE, TrackingContext, TrialTracker, prefer_own_retries

STATE_FILE = "trainer.pt"
BEST_FILE = "best.pt"

# What Ray Tune gets of an epoch when MLflow records all of it: besides the selection metric and
# its best so far, what the progress lines print and the timings benchmarks/gpu.py draws. Ray
# keeps running statistics of every numeric key of every trial in its saved experiment state
# (~0.6 kB a key a trial), and its result files repeat them: MLflow is the record.
RAY_RESULT_KEYS = ("epoch", "train/loss", "train/epoch_s", "val/eval_s", "time/step_end_unix", "done")


def _engine():
    """``tune_lsd.engine``, imported on first use (in the trial's process)."""
    from tune_lsd import engine

    return engine


def _process_age_s() -> float:
    """Seconds since this process started (Linux; 0 elsewhere)."""
    try:
        started_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return uptime - started_ticks / os.sysconf("SC_CLK_TCK")


def trial_config(base_config: dict[str, Any], sampled: dict[str, Any]) -> Config:
    """Base config + the trial's sampled keys (None means "not sampled": condition false)."""
    return Config.from_dict(apply_overrides(base_config, {k: v for k, v in sampled.items() if v is not None}))


class DMLTrainable(tune.Trainable):
    """Trains one configuration epoch by epoch for Ray Tune."""

    trainer: Any  # tune_lsd.engine.Trainer, imported in the trial's process; None for a replayed trial
    tracker: TrialTracker | None
    best_model: dict[str, Any] | None  # the best epoch's weights, config and history

    def setup(
        self,
        config: dict[str, Any],
        base_config: dict[str, Any] | None = None,
        tracking: TrackingContext | None = None,
        select_metric: str = "val/recall@1",
        shared_splits: DataSplits | None = None,
        finished_dir: str | None = None,
        undelivered_dir: str | None = None,
        storage: Location | None = None,
    ) -> None:
        """``shared_splits``: the base config's data, decoded once per search and read zero-copy
        from Ray's object store; used when this trial's data settings give the same split.
        ``finished_dir``: where finished trials leave their final result (see :func:`record_finished`).
        ``undelivered_dir``: where a tracked trial says which node holds its spool until every
        record reached MLflow (see :meth:`_mark_spool`).
        ``storage``: the search's storage, whose patience the checkpoints' uploads share."""
        started = time.perf_counter()
        self.storage = storage or Location(finished_dir or ".")
        self.finished_dir = Location(finished_dir, self.storage.patience_s) if finished_dir else None
        self.undelivered_dir = Location(undelivered_dir, self.storage.patience_s) if undelivered_dir else None
        self.uploads = UploadOutage(self.trial_id, self.storage)
        self.replay = finished_result(self.finished_dir, self.trial_id)
        if self.replay is not None:  # it finished before the driver died: report that, train nothing
            self.tracker, self.trainer, self.best_model = None, None, None
            return
        first_in_actor = not hasattr(self, "device_baseline")
        self.run_config = trial_config(base_config or {}, config)
        self.select_metric = select_metric
        self.best_value = float("-inf")
        self.best_model = None
        self.best_model_logged = False
        if tracking is None:
            self.tracker = None
        elif not self._continues_tracked_trial():  # (a PBT exploit continues its trial's run)
            prefer_own_retries()
            self.node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else "no-ray"
            self.tracker = self._open_tracker(tracking, config, self.node_id)
        # Where a trial's start goes (reported with every result): the actor's process start
        # and imports (first trial of an actor only), the engine's import, data + model + optimiser.
        self.timings = {"time/process_start_s": _process_age_s() if first_in_actor else 0.0}
        if first_in_actor:  # what the actor holds on its GPU before any trial
            self.device_baseline = _engine().device_bytes_allocated()
            # The imported modules' objects (torch, timm, mlflow, Ray: about a million) are never
            # garbage: out of every later collection, the one after each trial takes milliseconds
            # instead of about a second of CPU.
            gc.collect()
            gc.freeze()
        self.timings["time/import_s"] = time.perf_counter() - started
        base = Config.from_dict(base_config or {})
        use_shared = shared_splits is not None and split_key(self.run_config.data, self.run_config.seed) == split_key(
            base.data, base.seed
        )
        self.trainer = self.new_trainer(self.run_config, shared_splits if use_shared else None)
        self.timings["time/trainer_s"] = time.perf_counter() - started - self.timings["time/import_s"]
        self.timings["time/setup_s"] = time.perf_counter() - started

    def new_trainer(self, config: Config, splits: DataSplits | None) -> Any:
        """The trial's :class:`tune_lsd.engine.Trainer` (benchmarks/scale.py puts a stand-in here)."""
        return _engine().Trainer(config, splits=splits)

    def _continues_tracked_trial(self) -> bool:
        """Whether the incoming trial is the one this actor tracks already (after a PBT exploit)."""
        tracker = getattr(self, "tracker", None)
        return tracker is not None and tracker.trial_id == self.trial_id

    def _open_tracker(self, tracking: TrackingContext, config: dict[str, Any], node_id: str) -> TrialTracker:
        sampled = {k: v for k, v in config.items() if v is not None}
        tracker = TrialTracker(
            tracking, self.trial_id, self.trial_name, self.run_config.flat(), sampled, node_id=node_id
        )
        tracker.log_text(self.run_config.to_yaml(), "config.yaml")
        self._mark_spool(tracker, node_id)
        return tracker

    def _mark_spool(self, tracker: TrialTracker, node_id: str, records_left: int | None = None) -> None:
        """Say in the search's storage which node holds this trial's spool, until it is delivered:
        on a cluster without a shared folder, what a tracking server that stayed down missed is
        on that node's disk, and the search's end names the node (``tune-lsd sync`` there)."""
        if self.undelivered_dir is None:
            return
        marker = {
            "trial_id": tracker.trial_id,
            "node_id": node_id,
            "spool": str(tracker.writer.spool.folder),
            "node_ip": ray.util.get_node_ip_address() if ray.is_initialized() else "localhost",
            "records_left": records_left,
        }
        (self.undelivered_dir / f"{tracker.trial_id}.json").write_text(json.dumps(marker))

    def step(self) -> dict[str, Any]:
        if self.replay is not None:
            return {**self.replay, "done": True, REPLAYED: True}
        metrics = self.trainer.run_epoch()
        epoch_ended = time.time()
        value = metrics.get(self.select_metric, float("-inf"))
        if value > self.best_value:
            self.best_value = value
            self.best_model = self._model_snapshot()
        metrics[f"best/{self.select_metric}"] = self.best_value
        metrics.update(self.timings)
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=metrics["epoch"])
        metrics["time/step_end_unix"] = epoch_ended  # for Ray's results only (benchmarks/gpu.py's timelines)
        metrics["done"] = self.trainer.epoch >= self.run_config.schedule.epochs
        result = self._for_ray(metrics)
        if result["done"]:
            # The best model goes to the trial's spool (this node's disk) before the trial counts as
            # finished: a driver killed now takes this process with it, and a resumed search only
            # replays the finished result; the spool is still delivered (the driver, or tune-lsd sync).
            self._log_best_model()
            record_finished(self.finished_dir, self.trial_id, result)
        return result

    def _for_ray(self, metrics: dict[str, Any]) -> dict[str, Any]:
        """The epoch's result for Ray Tune: all of it without MLflow, else :data:`RAY_RESULT_KEYS`."""
        if self.tracker is None:
            return metrics
        keep = {self.select_metric, f"best/{self.select_metric}", *RAY_RESULT_KEYS, *self.timings}
        return {key: value for key, value in metrics.items() if key in keep}

    def _model_snapshot(self) -> dict[str, Any]:
        """Weights (on the CPU), config and history: what `tune-lsd evaluate` needs."""
        return {
            "config": self.run_config.to_dict(),
            "epoch": self.trainer.epoch,
            "student": {k: v.detach().to("cpu", copy=True) for k, v in self.trainer.model.state_dict().items()},
            "history": copy.deepcopy(self.trainer.history),
        }

    def save_checkpoint(self, checkpoint_dir: str) -> None:
        """What resume needs, each tensor once: the trainer's state, and the best-so-far weights
        only when the best epoch is not the current one (then they are the trainer's student)."""
        folder = Path(checkpoint_dir)
        if self.replay is not None:  # nothing to save; Ray wants a checkpoint with a file in it
            (folder / "replayed.json").write_text("{}")
            return
        self.trainer.save(folder / STATE_FILE)
        best_is_current = self.best_model is not None and self.best_model["epoch"] == self.trainer.epoch
        best = {
            "best_value": self.best_value,
            "best_is_current": best_is_current,
            "best_epoch": None if self.best_model is None else self.best_model["epoch"],
            "best_student": None if best_is_current or self.best_model is None else self.best_model["student"],
        }
        _engine().save_file(best, folder / BEST_FILE)
        write_manifest(folder, self.iteration)  # last: it names the files above and their sizes

    def save(self, checkpoint_dir: str | None = None) -> Any:
        """Ray's save (``save_checkpoint``, then the upload to the search's storage); while the
        storage does not answer, training goes on without the checkpoint (trainables/uploads.py)."""
        from ray.train._internal.session import _TrainingResult  # what Trainable.save returns

        folder = checkpoint_dir or tempfile.mkdtemp(prefix="tune_lsd-checkpoint-")
        keep = checkpoint_dir is not None
        try:
            try:
                result = super().save(folder)
            except Exception as error:
                if not is_transient(error) or self.storage.patience_s <= 0:
                    raise
                self.uploads.failed(error, epoch=self.trainer.epoch if self.trainer is not None else self.iteration)
                return _TrainingResult(checkpoint=None, metrics=dict(self._last_result or {}))  # (Ray registers none)
            self.uploads.succeeded()
            # without a storage (a trainable used outside a Tuner) the checkpoint is the folder itself
            keep = keep or (result.checkpoint is not None and Path(result.checkpoint.path) == Path(folder))
            return result
        finally:
            if not keep:  # uploaded, or failed: the local copy can go
                shutil.rmtree(folder, ignore_errors=True)

    def restore(self, checkpoint_path: Any) -> None:
        """Ray's restore, from the newest checkpoint of the trial that is whole in the storage
        (the one Ray chose, or an earlier one, with one line; see trainables/checkpoints.py),
        waited for while the storage does not answer."""
        chosen = checkpoint_path
        if getattr(checkpoint_path, "checkpoint", None) is not None:
            chosen = self._waiting(
                lambda: whole_result(
                    checkpoint_path, self.trial_id, (STATE_FILE, BEST_FILE), _engine().CheckpointError
                ),
                "reading its checkpoint",
            )
        self._waiting(lambda: super(DMLTrainable, self).restore(chosen), "the download of its checkpoint")

    def _waiting(self, operation: Callable[[], Any], what: str) -> Any:
        """``operation``, tried again while the search's storage does not answer, up to its patience."""
        return retrying(operation, f"trial {self.trial_id}: {what}", self.storage.uri, self.storage.patience_s)

    def load_checkpoint(self, checkpoint_dir: str) -> None:  # type: ignore[override]  # Ray passes the folder
        folder = Path(checkpoint_dir)
        if self.replay is not None:
            return
        # Hyperparameters stay those of this trial's config (PBT may have just mutated them).
        self.trainer.load_state_dict(_engine().load_file(folder / STATE_FILE))
        best = _engine().load_file(folder / BEST_FILE)
        self.best_value = best["best_value"]
        if best["best_is_current"]:
            self.best_model = self._model_snapshot()
        elif best["best_student"] is not None:
            epoch = best["best_epoch"]
            self.best_model = {
                "config": self.run_config.to_dict(),
                "epoch": epoch,
                "student": best["best_student"],
                "history": copy.deepcopy(self.trainer.history[:epoch]),
            }
        else:
            self.best_model = None

    def _log_best_model(self) -> None:
        """Hand the trial's best model to its MLflow run (once: at its last epoch, or when it ends)."""
        if self.tracker is None or self.best_model is None or self.best_model_logged:
            return
        best = self.best_model
        self.tracker.log_checkpoint(lambda folder: _engine().save_file(best, folder / MODEL_FILE))
        self.best_model_logged = True

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        """Actor reuse: the next trial (or, after a PBT exploit, this trial with the donor's
        checkpoint, loaded next by Ray) takes this process instead of a new one.

        Everything is rebuilt from scratch. Ray has already set ``self.trial_id`` to the
        incoming trial. The actor is refused (a warning says why) when the finished trial's GPU
        memory is not back to what the actor held before its first trial: Ray then fails the
        incoming trial's start, and the search (which allows GPU trials one retry) starts it
        again in a fresh actor.
        ``tune.with_parameters`` wraps ``setup`` to inject its keyword arguments, so it is
        called here with the config alone.
        """
        self._finish(upload=not self._continues_tracked_trial())
        trained = hasattr(self, "device_baseline")  # (an actor that only replayed finished trials did not)
        held = _engine().device_bytes_allocated() - self.device_baseline if trained else 0
        if held > 0:
            warnings.warn(
                f"not reusing this actor for trial {self.trial_id}: {held / 2**20:.0f} MB of GPU memory "
                "is still allocated after the previous trial ended",
                stacklevel=1,
            )
            return False
        self.setup(new_config)
        return True

    def cleanup(self) -> None:
        self._finish()

    def _finish(self, upload: bool = True) -> None:
        """Upload the best model to the trial's MLflow run; free the memory the trial held."""
        if upload and self.tracker is not None:
            self._log_best_model()
            left = self.tracker.close()
            if left:
                warnings.warn(
                    f"trial {self.tracker.trial_id}: the tracking server did not take {left} records "
                    f"({self.tracker.writer.last_error}); they are kept for `tune-lsd sync`",
                    stacklevel=1,
                )
                self._mark_spool(self.tracker, self.node_id, records_left=left)
            elif self.undelivered_dir is not None:
                (self.undelivered_dir / f"{self.tracker.trial_id}.json").delete()
        compiled = getattr(self, "trainer", None) is not None and self.trainer.config.runtime.compile
        self.best_model = None
        self.trainer = None
        if hasattr(self, "device_baseline"):  # set up at least once (the engine is imported)
            _engine().release_device_memory(baseline=self.device_baseline, compiled=compiled)
