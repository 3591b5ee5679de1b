"""The search's Tune callbacks, in the driver: progress lines, trial states, the trial count.

Ray Tune pickles the callbacks with the search when it starts and, on ``--resume``, restores
them from that pickle. So what a callback writes to (the MLflow context, the folder of
finished trials) is not kept in it but read from :func:`~tune_lsd.search.running.running_search`:
a search resumed in another working directory, or saved by an older tune_lsd, reports to the
resumed search's places.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ray import tune

from trainables.finished import record_finished
from tune_lsd import tracking
from tune_lsd.search.running import running_search
from tune_lsd.search.searchers import TrialCountedSearch


class TrialCountCallback(tune.Callback):
    """Keeps a :class:`TrialCountedSearch` in step with Tune's trial list (pickled with it by
    the Tuner, so a restored search keeps the pair)."""

    def __init__(self, search_alg: TrialCountedSearch) -> None:
        self.search_alg = search_alg

    def on_step_begin(self, iteration, trials, **info) -> None:
        self.search_alg.follow(len(trials))


class ModelRetentionCallback(tune.Callback):
    """The models of ended trials beyond the best ``keep`` deleted from MLflow while the search
    runs (every ``every`` ended trials, in a background thread: the driver's loop never waits on
    MLflow; reading only the runs that hold a model, so a sweep costs the same at any number of
    trials), so that the disk holds about ``keep`` + the recent trials' models, not one per
    trial. The search's end does it once more over every run."""

    def __init__(self, metric: str, mode: str, keep: int, every: int = 20) -> None:
        self.metric, self.mode, self.keep, self.every = metric, mode, keep, every
        self.ended = 0
        self.sweeping: threading.Thread | None = None

    def __getstate__(self) -> dict[str, Any]:  # pickled with the search's state: no thread
        return {**self.__dict__, "sweeping": None}

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        if self.ended % self.every == 0 and (self.sweeping is None or not self.sweeping.is_alive()):
            self.sweeping = threading.Thread(
                target=self._sweep, args=(running_search().context,), name="model-retention", daemon=True
            )
            self.sweeping.start()

    def _sweep(self, context: tracking.TrackingContext) -> None:
        try:
            tracking.keep_best_models(context, self.metric, self.mode, self.keep, every_run=False)
        except Exception as error:  # the search's end tries again and says what failed
            print(f"warning: the models of trials beyond the best {self.keep} were not deleted yet: {error}")

    def on_experiment_end(self, trials, **info) -> None:
        if self.sweeping is not None:
            self.sweeping.join()


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
        self.log(
            f"{self._prefix(trial)} epoch {result.get('epoch')}/{self.epochs}  "
            f"{self.metric} {result.get(self.metric, float('nan')):.4f}  "
            f"(best {result.get('best/' + self.metric, float('nan')):.4f})  "
            f"loss {result.get('train/loss', float('nan')):.4f}  {result.get('train/epoch_s', 0):.0f} s/epoch"
        )

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        outages = running_search().outages
        if outages is not None:
            outages.answered(f"trial {trial.trial_id} saved its checkpoint")

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        epochs = (trial.last_result or {}).get("epoch", 0)
        how = "completed" if epochs >= self.epochs else f"stopped early after {epochs} epochs"
        self.log(f"{self._prefix(trial)} {how}  [{self.ended}/{self.num_samples} trials done]")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.ended += 1
        self.log(f"{self._prefix(trial)} errored: {error_line(trial)}  [{self.ended}/{self.num_samples} trials done]")


class TrialStateCallback(tune.Callback):
    """Each trial's final state (and error) for its MLflow child run, spooled; a trial the
    scheduler stopped is recorded as finished, so that ``--resume`` never trains it again.
    It records for :func:`running_search` (attributes pickled by older versions are ignored)."""

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        search = running_search()
        finished = (trial.last_result or {}).get("epoch", 0) >= search.epochs
        if not finished and trial.last_result:  # the scheduler stopped it: never resume it
            record_finished(search.finished_dir, trial.trial_id, trial.last_result)
        tracking.search_recorder(search.context).trial_ended(
            trial.trial_id, "completed" if finished else "stopped early"
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        tracking.search_recorder(running_search().context).trial_ended(
            trial.trial_id, "errored", error_line(trial), has_run=bool(trial.last_result)
        )

    def on_experiment_end(self, trials, **info) -> None:
        """Delete the MLflow runs of trials Ray Tune lost when an earlier driver was killed
        (they started after Ray's last saved state): the search keeps exactly its trials. Ray
        calls this when the fit ends, interrupted or not."""
        try:
            lost = tracking.discard_lost_trial_runs(running_search().context, {trial.trial_id for trial in trials})
        except tracking.TrackingError as error:
            print(f"warning: could not check MLflow for runs of lost trials: {error}")
            return
        for trial_id, epochs in lost:
            print(
                f"MLflow: deleted the run of trial {trial_id} ({epochs} epoch{'s' * (epochs != 1)} logged): "
                "it started after the last state Ray Tune saved before an earlier driver was killed, "
                "so --resume ran another trial in its place"
            )


def error_line(trial) -> str:
    """The last line of a trial's traceback: the exception and its message."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return "trial failed (no error file)"


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
