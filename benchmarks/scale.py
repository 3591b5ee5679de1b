"""Scale: the search machinery at hundreds to thousands of trials, with only the training stood in.

Everything but the training is the real search: `run_search` (Ray Tune with actor reuse, the
searcher and scheduler, the progress and state callbacks), `DMLTrainable` (MLflow tracking
through its spool, finished records, spool markers, checkpoints in the search's storage,
the best model uploaded at the end), the search's completion. The stand-in trainer sleeps for
an epoch's time and returns an epoch's metrics of the real shape (the keys and count of a
real glyph epoch); its model is a few-kB network.

It reports the wall time against the ideal (the trials' epochs x the epoch time / the slots),
the time between trial completions by fifths of the search (a cost per trial that grows with
the trials already run shows here), the driver's controller steps (count, mean and p99
duration: each step saves Ray's experiment state when due), the size of that saved state,
the driver's peak RSS, and checks that MLflow has every trial and every epoch once.

    python benchmarks/scale.py [--trials 300] [--concurrent 16] [--epochs 1] [--epoch-s 1]
        [--searcher random] [--scheduler fifo] [--storage s3://...] [--tracking-uri http://...]
        [--keep-models 10] [--against-every-step] [--reading]

``--against-every-step`` runs the search twice, first with Ray Tune saving its experiment state
after every controller step (``TUNE_GLOBAL_CHECKPOINT_S=0``, what tune_lsd did before) as the
baseline, then as tune_lsd runs it, and prints the ratio of their wall times. ``--reading``
then times, on the search it ran, the commands that read a search (`ls`, `report`, `export`,
`prune`, `sync`, `--resume` of the complete search) and the reads a search makes of all its
trials (`--extend`'s earlier results, the clean-up of lost trial runs at the fit's end).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import tune

from trainables.dml import DMLTrainable
from tune_lsd.config import Config
from tune_lsd.data.splits import DataSplits

# An epoch's metrics as a real glyph epoch reports them (the trainable adds best/ and time/ keys).
EPOCH_METRICS = (
    "train/loss",
    "train/base_loss",
    "lsd/loss",
    "lsd/weight",
    "train/lr",
    "train/epoch_s",
    "train/images_per_s",
    "val/recall@1",
    "val/recall@2",
    "val/recall@4",
    "val/recall@8",
    "val/map@r",
    "val/r_precision",
    "val/nmi",
    "val/eval_s",
)


class StandInTrainer:
    """What `DMLTrainable` uses of a Trainer: ``run_epoch`` sleeps for ``epoch_s`` seconds."""

    def __init__(self, config: Config, epoch_s: float) -> None:
        self.config, self.epoch_s = config, epoch_s
        self.epoch = 0
        self.history: list[dict[str, float]] = []
        self.model = torch.nn.Linear(8, 8)
        self.seed = hash((config.optim.lr, config.seed)) % 1000

    def run_epoch(self) -> dict[str, float]:
        time.sleep(self.epoch_s)
        self.epoch += 1
        value = (self.seed % 97) / 100 + self.epoch / 100  # differs between trials, grows with epochs
        metrics = {name: value for name in EPOCH_METRICS}
        metrics["epoch"] = self.epoch
        self.history.append(metrics)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "history": self.history, "student": self.model.state_dict()}

    def save(self, path: Path) -> None:
        torch.save(self.state_dict(), path)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.history = state["epoch"], list(state["history"])
        self.model.load_state_dict(state["student"])


def stand_in_trainable(epoch_s: float) -> type[DMLTrainable]:
    class StandInTrainable(DMLTrainable):
        def new_trainer(self, config: Config, splits: DataSplits | None) -> StandInTrainer:
            return StandInTrainer(config, epoch_s)

    return StandInTrainable


class DriverProbe(tune.Callback):
    """Times the driver's controller steps and records when each trial ended."""

    def __init__(self) -> None:
        self.step_started = 0.0
        self.steps: list[float] = []
        self.completions: list[float] = []

    def on_step_begin(self, iteration, trials, **info) -> None:
        self.step_started = time.perf_counter()

    def on_step_end(self, iteration, trials, **info) -> None:
        self.steps.append(time.perf_counter() - self.step_started)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.completions.append(time.perf_counter())


def time_state_saves() -> list[float]:
    """Time every save of Ray Tune's experiment state in this process (its controller's
    ``save_to_dir``; what is copied to the storage after it runs in the background)."""
    from ray.tune.execution.tune_controller import TuneController

    durations: list[float] = []
    save = TuneController.save_to_dir

    def timed(controller: TuneController) -> None:
        started = time.perf_counter()
        save(controller)
        durations.append(time.perf_counter() - started)

    TuneController.save_to_dir = timed  # type: ignore[method-assign]
    return durations


def check_mlflow(tracking_uri: str, name: str, trials: int) -> str:
    """Every trial's run once, every epoch of it once (its `epoch` metric's steps)."""
    from mlflow.tracking import MlflowClient

    from tune_lsd import tracking

    runs = tracking.trial_runs(tracking_uri, name)
    client = MlflowClient(tracking_uri)
    duplicated = 0
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        duplicated += len(steps) - len(set(steps))
    ids = {run.data.tags[tracking.TRIAL_ID_TAG] for run in runs}
    verdict = "exact" if len(runs) == len(ids) == trials and duplicated == 0 else "NOT EXACT"
    return f"MLflow: {len(runs)} trial runs of {trials}, {duplicated} epochs logged twice: {verdict}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300)
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--epoch-s", type=float, default=1.0)
    parser.add_argument("--searcher", default="random")
    parser.add_argument("--scheduler", default="fifo")
    parser.add_argument("--storage", default=None, help="object storage URI (default: the runs folder)")
    parser.add_argument("--tracking-uri", default=None, help="default: the runs folder's SQLite file")
    parser.add_argument("--runs-dir", default=None, help="default: a temporary folder")
    parser.add_argument("--against-every-step", action="store_true", help="first a baseline saving every step")
    parser.add_argument("--reading", action="store_true", help="then time the commands that read the search")
    parser.add_argument("--keep-models", type=int, default=10, help="the search's --keep-models")
    args = parser.parse_args()
    if args.against_every_step:
        return against_every_step([a for a in sys.argv[1:] if a != "--against-every-step"])

    from tune_lsd.search.runner import run_search
    from tune_lsd.search.settings import SearchSettings

    runs_dir = Path(args.runs_dir or tempfile.mkdtemp(prefix="scale-"))
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    settings = SearchSettings(
        name="scale",
        space="lsd",
        searcher=args.searcher,
        scheduler=args.scheduler,
        num_samples=args.trials,
        max_concurrent=args.concurrent,
        cpus_per_trial=2 / args.concurrent,  # sleeping trials: all slots fit on a 2-core machine
        overrides=[f"schedule.epochs={args.epochs}", "data.max_classes=10", "eval.nmi=false"],
        runs_dir=str(runs_dir),
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        share_data=False,  # the stand-in reads no data
        keep_models=args.keep_models,
    )
    probe = DriverProbe()
    saves = time_state_saves()
    started = time.perf_counter()
    summary = run_search(
        settings, log=lambda line: None, trainable=stand_in_trainable(args.epoch_s), tune_callbacks=[probe]
    )
    wall = time.perf_counter() - started
    ideal = summary["epochs_run"] * args.epoch_s / args.concurrent

    print(
        f"scale: {args.trials} trials x {args.epochs} epochs of {args.epoch_s:g} s, {args.concurrent} at a time, "
        f"{args.searcher} + {args.scheduler}, storage {settings.storage or 'folder'}, "
        f"MLflow {settings.resolved_tracking_uri().split(':')[0]}"
    )
    print(
        f"  {summary['trials']} trials ({summary['errored']} errored), {summary['epochs_run']} epochs; "
        f"search {summary['state']}"
    )
    gaps = np.diff(probe.completions)
    by_fifth = [chunk.mean() for chunk in np.array_split(gaps, 5) if len(chunk)]
    print("  seconds between trial completions, by fifths of the search: " + ", ".join(f"{g:.3f}" for g in by_fifth))
    print(
        f"  controller steps: {len(probe.steps)}, mean {1000 * sum(probe.steps) / max(1, len(probe.steps)):.1f} ms, "
        f"p99 {1000 * np.percentile(probe.steps, 99):.1f} ms, sum {sum(probe.steps):.0f} s"
    )
    print(
        f"  state saves: {len(saves)} ({len(saves) / max(1, args.trials):.2f} a trial), mean "
        f"{1000 * float(np.mean(saves or [0])):.1f} ms, max {1000 * max(saves or [0]):.1f} ms, sum {sum(saves):.1f} s"
    )
    # Ray's saved state, in the driver's staging folder (what every save writes, then syncs)
    staging = sorted(Path(tempfile.gettempdir(), "ray").glob("session_*/artifacts/*/scale/driver_artifacts"))
    state_bytes = sum(f.stat().st_size for f in staging[-1].glob("experiment_state-*.json")) if staging else 0
    searcher_bytes = sum(f.stat().st_size for f in staging[-1].glob("*.pkl")) if staging else 0
    print(
        f"  Ray's saved state: {state_bytes / 1e6:.2f} MB ({state_bytes / max(1, args.trials) / 1e3:.1f} kB a trial), "
        f"searcher and callbacks {searcher_bytes / 1e6:.2f} MB"
    )
    print(f"  driver peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    print("  " + check_mlflow(settings.resolved_tracking_uri(), "scale", args.trials))
    models = list(runs_dir.glob("mlartifacts/**/checkpoint/model.pt"))
    print(
        f"  trial models kept in MLflow: {len(models)} of {summary['trials']} trials "
        f"(--keep-models {settings.keep_models}), {sum(m.stat().st_size for m in models) / 1e6:.2f} MB"
    )
    print(f"ratio wall/ideal: {wall / ideal:.2f} ({wall:.0f} s against {ideal:.0f} s)")
    sys.stdout.flush()
    if args.reading:
        time_reading_side(settings)


def time_reading_side(settings: Any) -> None:
    """The commands that read a search, each timed as a user runs it (a fresh `tune-lsd`
    process: its imports included), and the two reads a search itself makes of all its trials."""
    import subprocess

    from tune_lsd import tracking
    from tune_lsd.search.extend import earlier_results

    where = [
        "--runs-dir",
        settings.runs_dir,
        *(["--tracking-uri", settings.tracking_uri] if settings.tracking_uri else []),
    ]
    location = ["--runs-dir", settings.runs_dir, *(["--storage", settings.storage] if settings.storage else [])]
    commands = {
        "ls": ["ls", *where],
        "report": ["report", "scale", "--output", str(Path(settings.runs_dir) / "report"), *where],
        "export": ["export", "--experiment", "scale", "--output", str(Path(settings.runs_dir) / "best.yaml"), *where],
        "prune": ["prune", "scale", *location],
        "sync": ["sync", "scale", *location],
        "search --resume (complete)": ["search", "--resume", "scale", *location],
    }
    tune_lsd = Path(sys.executable).with_name("tune-lsd")
    print("reading side:")
    for label, command in commands.items():
        started = time.perf_counter()
        done = subprocess.run([str(tune_lsd), *command], capture_output=True, text=True)
        outcome = "ok" if done.returncode == 0 else f"FAILED: {(done.stderr or done.stdout).strip().splitlines()[-1]}"
        print(f"  tune-lsd {label}: {time.perf_counter() - started:.1f} s ({outcome})")
    uri = settings.resolved_tracking_uri()
    started = time.perf_counter()
    earlier, ran = earlier_results(settings)
    print(f"  --extend's read of the earlier trials: {time.perf_counter() - started:.1f} s ({len(earlier)} of {ran})")
    context = dataclasses.replace(tracking.search_context(uri, "scale"), ray_experiment="scale")
    known = {run.data.tags[tracking.TRIAL_ID_TAG] for run in tracking.trial_runs(uri, "scale")}
    started = time.perf_counter()
    lost = tracking.discard_lost_trial_runs(context, known)
    print(f"  the fit's end's clean-up of lost trial runs: {time.perf_counter() - started:.1f} s ({len(lost)} lost)")
    sys.stdout.flush()


def against_every_step(arguments: list[str]) -> None:
    """This benchmark twice, in fresh processes: saving Ray's state every step, then as configured."""
    import re
    import subprocess

    walls = []
    for label, period in (("baseline: Ray's state saved every step", "0"), ("tune_lsd", None)):
        env = {k: v for k, v in os.environ.items() if k != "TUNE_GLOBAL_CHECKPOINT_S"}
        if period is not None:
            env["TUNE_GLOBAL_CHECKPOINT_S"] = period
        print(f"== {label}", flush=True)
        out = subprocess.run(
            [sys.executable, __file__, *arguments], env=env, capture_output=True, text=True, check=True
        ).stdout
        print(out[out.index("scale: ") :], end="", flush=True)  # (not the trials' progress lines)
        found = re.search(r"ratio wall/ideal: [\d.]+ \((\d+) s", out)
        assert found is not None, out
        walls.append(float(found.group(1)))
    print(f"ratio tune_lsd/every-step wall time: {walls[1] / walls[0]:.2f} ({walls[1]:.0f} s against {walls[0]:.0f} s)")


if __name__ == "__main__":
    main()
