"""Chaos: a search that loses its worker node, its driver, its tracking server and its object
store, several times each, and must still end exactly.

Everything is real and on loopback: a two-node Ray cluster (a head and a worker node, one CPU
each), SeaweedFS as the search's ``--storage``, ``tune-lsd server`` as its tracking server, and
``tune-lsd search`` as the driver. While the search runs, a fault driver SIGKILLs, at random
times and one at a time:

- ``worker``: the worker node's whole process tree (its trials restart elsewhere from their
  checkpoints, spending ``--max-failures``), started again after a random downtime;
- ``driver``: the search's driver, then ``tune-lsd search --resume NAME --storage URI`` after
  the downtime, as a user or a job system would;
- ``server``: the tracking server (the trials spool their records), restarted on its folder;
- ``store``: SeaweedFS (the trials and the driver wait for it), restarted on its folder.

At the end it checks what a user relies on: exactly ``--trials`` trial runs in MLflow, all
completed; every epoch of every trial in MLflow (and how many are there twice); every epoch
trained, as the bucket's results say (more than once when a kill made a trial train an epoch
again); the search's completion and its best trial's model registered (``@search-best``); and
``tune-lsd finalize`` registering the champion. Without ``--no-baseline`` the same search
first runs without faults, and the last line is the ratio of the wall times.

    python benchmarks/chaos.py [--trials 24] [--epochs 16] [--steps 6] [--faults 3] [--down-s 10 60]
        [--gap-s 10 40] [--seed 0] [--timeout-s 5400] [--no-baseline] [--folder DIR]

Exit status 1 when a check fails (each failure is one line starting with ``FAILED:``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' SeaweedFS and driver helpers

from object_store import ObjectStore, kill_object_store, restart_object_store, start_object_store, stop_object_store
from searching import TINY, free_port, kill_tree, start_server, start_tune_lsd, tune_lsd, wait_until_search_started

from tune_lsd.cluster import cluster_down, cluster_up, end_process_tree, node_command
from tune_lsd.errors import first_line

FAULT_KINDS = ("worker", "driver", "server", "store")
MAX_UNEXPECTED_EXITS = 3  # driver failures (exits other than success that no fault caused) before giving up


@dataclass
class Services:
    """The cluster, the tracking server and the object store a search runs on, each started by
    this script and ended by its pid."""

    folder: Path
    store: ObjectStore
    address: str
    server_port: int
    server: subprocess.Popen | None = None
    worker: subprocess.Popen | None = None

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def start_worker(self) -> None:
        env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_LOGGER_LEVEL": "warning"}
        log = open(self.folder / "worker.log", "a")
        command = node_command(self.address, 0, 1, None, 150 * 2**20)
        self.worker = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_server(self) -> None:
        self.server = start_server(self.folder, self.server_port)

    def kill(self, kind: str) -> None:
        """SIGKILL the worker node, the tracking server or the object store (not the driver)."""
        if kind == "worker" and self.worker is not None:
            end_process_tree(self.worker.pid, grace_s=0)
            self.worker.wait(timeout=30)
        elif kind == "server" and self.server is not None:
            kill_tree(self.server)
        elif kind == "store":
            kill_object_store(self.store)

    def restart(self, kind: str) -> None:
        {"worker": self.start_worker, "server": self.start_server, "store": lambda: restart_object_store(self.store)}[
            kind
        ]()

    def stop(self) -> None:
        for process in (self.worker, self.server):
            if process is not None and process.poll() is None:
                end_process_tree(process.pid, grace_s=5)
        cluster_down(self.folder / "head")
        stop_object_store(self.store)


@dataclass
class Outcome:
    """What one search went through and what it left."""

    name: str
    wall_s: float = 0.0
    faults: Counter = field(default_factory=Counter)
    unexpected_exits: int = 0  # driver exits this script did not cause, other than success
    syncs: int = 0  # `tune-lsd sync` runs (the search ended while its tracking server was down)
    failures: list[str] = field(default_factory=list)
    numbers: dict[str, int] = field(default_factory=dict)


def start_services(folder: Path) -> Services:
    store = start_object_store(folder / "seaweedfs")
    os.environ.update(store.credentials())  # the driver's, the nodes' and the trials' environment
    address = cluster_up(folder / "head", port=free_port(), workers=0, cpus_per_node=1, object_store_mb=150)
    services = Services(folder, store, address, free_port())
    try:
        services.start_worker()
        services.start_server()
    except BaseException:
        services.stop()
        raise
    return services


def search_args(name: str, services: Services, args: argparse.Namespace) -> list[str]:
    # fmt: off
    return [
        "search", "--space", "lsd", "--name", name, "--num-samples", str(args.trials), "--max-concurrent", "2",
        "--scheduler", "fifo", "--max-failures", str(3 * args.faults + 2), "--address", services.address,
        "--storage", services.store.uri("chaos"), "--tracking-uri", services.tracking_uri,
        *TINY, "--set", f"schedule.epochs={args.epochs}", "--set", f"schedule.steps_per_epoch={args.steps}",
    ]
    # fmt: on


def run_search(name: str, services: Services, args: argparse.Namespace, faults: list[str]) -> Outcome:
    """Run search ``name`` to its end, injecting ``faults`` (kinds, in order) at random gaps."""
    rng = random.Random(f"{args.seed}-{name}")
    outcome = Outcome(name)
    storage = services.store.uri("chaos")
    started = time.monotonic()
    attempt = 0

    def start_driver(*driver_args: str) -> tuple[subprocess.Popen, Path]:
        nonlocal attempt
        attempt += 1
        log = services.folder / f"{name}-driver{attempt}.log"
        return start_tune_lsd(*driver_args, cwd=services.folder, log=log), log

    driver, log = start_driver(*search_args(name, services, args))
    try:
        wait_until_search_started(log, name)
        pending = list(faults)
        next_fault_at = time.monotonic() + rng.uniform(*args.gap_s)
        while True:
            if time.monotonic() - started > args.timeout_s:
                kill_tree(driver)
                outcome.failures.append(
                    f"{name}: not complete after {args.timeout_s:.0f} s: {log.read_text()[-800:]!r}"
                )
                return outcome
            if driver.poll() is not None:
                if driver.returncode == 0:
                    break
                outcome.unexpected_exits += 1
                if outcome.unexpected_exits > MAX_UNEXPECTED_EXITS:
                    outcome.failures.append(
                        f"{name}: the driver failed {outcome.unexpected_exits} times: {log.read_text()[-800:]!r}"
                    )
                    return outcome
                print(f"  driver exited with {driver.returncode}: {log.read_text()[-1500:]}", flush=True)
                driver, log = start_driver("search", "--resume", name, "--storage", storage)
                continue
            if pending and time.monotonic() >= next_fault_at:
                kind, down_s = pending.pop(0), rng.uniform(*args.down_s)
                print(f"  {time.monotonic() - started:6.0f} s: {kind} killed for {down_s:.0f} s", flush=True)
                if kind == "driver":
                    kill_tree(driver)
                    time.sleep(down_s)
                    driver, log = start_driver("search", "--resume", name, "--storage", storage)
                else:
                    services.kill(kind)
                    time.sleep(down_s)
                    services.restart(kind)
                outcome.faults[kind] += 1
                next_fault_at = time.monotonic() + rng.uniform(*args.gap_s)
            time.sleep(0.5)
    except BaseException:  # (SIGTERM, Ctrl-C, a bug here): the driver of the moment goes too
        kill_tree(driver)
        raise
    text = log.read_text()
    if f"tune-lsd sync {name}" in text:  # the search ended while the tracking server was down: as it says
        synced = tune_lsd("sync", name, "--storage", storage, cwd=services.folder)
        outcome.syncs += 1
        print(f"  sync: {synced.stdout.strip().splitlines()[-1:]}", flush=True)
    outcome.wall_s = time.monotonic() - started
    if f"search {name!r} completed: {args.trials} trials (0 errored)" not in text:
        outcome.failures.append(f"{name}: the driver's last run did not report {args.trials} trials: {text[-800:]!r}")
    return outcome


def check(outcome: Outcome, services: Services, args: argparse.Namespace) -> None:
    """Count the trials and epochs in MLflow and in the bucket; run finalize; note every failure."""
    from mlflow.tracking import MlflowClient

    from tune_lsd.storage import Location
    from tune_lsd.tracking import STATE_TAG, TRIAL_ID_TAG, trial_runs

    name, expected_epochs = outcome.name, list(range(1, args.epochs + 1))
    client = MlflowClient(services.tracking_uri)
    runs = trial_runs(services.tracking_uri, name)
    steps = {run.info.run_id: [m.step for m in client.get_metric_history(run.info.run_id, "epoch")] for run in runs}
    numbers = outcome.numbers
    numbers["trials found"] = len(runs)
    numbers["trials completed"] = sum(run.data.tags.get(STATE_TAG) == "completed" for run in runs)
    numbers["epochs expected"] = args.trials * args.epochs
    numbers["epochs in MLflow"] = sum(len(set(s)) for s in steps.values())
    numbers["epochs in MLflow twice"] = sum(len(s) - len(set(s)) for s in steps.values())
    # (a trial that started after the last state Ray saved before a driver kill is lost: the
    # resumed search ran another in its place and deleted its MLflow run; its folder stays)
    known = {run.data.tags[TRIAL_ID_TAG] for run in runs}
    trained = {
        trial: epochs
        for trial, epochs in bucket_epochs(Location(services.store.uri("chaos")) / "ray" / name).items()
        if trial.split("_")[1] in known
    }
    numbers["epochs trained"] = sum(len(e) for e in trained.values())
    if len(runs) != args.trials or numbers["trials completed"] != args.trials:
        outcome.failures.append(f"{name}: {len(runs)} trial runs, {numbers['trials completed']} completed")
    for run in runs:
        if sorted(set(steps[run.info.run_id])) != expected_epochs:
            outcome.failures.append(f"{name}: trial {run.info.run_name} has epochs {sorted(steps[run.info.run_id])}")
    if len(trained) != args.trials or any(sorted(set(e)) != expected_epochs for e in trained.values()):
        outcome.failures.append(f"{name}: the bucket's results: {trained}")
    try:  # the search registered its best trial's model
        client.get_model_version_by_alias(f"{name}-best", "search-best")
    except Exception as error:  # (any MLflow error: the model is not there)
        outcome.failures.append(f"{name}: the best trial's model is not registered ({first_line(error)})")
    final = tune_lsd("finalize", name, "--storage", services.store.uri("chaos"), cwd=services.folder)
    try:
        client.get_model_version_by_alias(f"{name}-best", "champion")
    except Exception as error:  # (any MLflow error: the champion is not there)
        outcome.failures.append(f"{name}: no champion ({first_line(error)}); finalize said {final.stdout[-400:]!r}")


def bucket_epochs(experiment) -> dict[str, list[int]]:
    """Each trial's trained epochs as Ray's results in the bucket hold them (replays excluded)."""
    found = {}
    for trial in experiment.folders():
        if (experiment / trial / "result.json").exists():
            lines = [json.loads(line) for line in (experiment / trial / "result.json").read_text().splitlines() if line]
            found[trial] = [line["epoch"] for line in lines if not line.get("replayed")]
    return found


def table(outcomes: list[Outcome]) -> list[str]:
    lines = [
        "| search | faults (worker/driver/server/store) | trials found/completed | epochs expected / in MLflow "
        "/ twice in MLflow | epochs trained | driver failures | syncs | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        n = o.numbers
        lines.append(
            f"| {o.name} | {'/'.join(str(o.faults[k]) for k in FAULT_KINDS)} | {n['trials found']}/"
            f"{n['trials completed']} | {n['epochs expected']} / {n['epochs in MLflow']} / "
            f"{n['epochs in MLflow twice']} | {n['epochs trained']} | {o.unexpected_exits} | {o.syncs} | "
            f"{o.wall_s:.0f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="batches per epoch")
    parser.add_argument("--faults", type=int, default=3, help="faults of each kind")
    parser.add_argument("--down-s", type=float, nargs=2, default=(10, 60), help="a fault's downtime: from, to")
    parser.add_argument("--gap-s", type=float, nargs=2, default=(10, 40), help="time between faults: from, to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout-s", type=float, default=5400, help="a search not complete by then fails")
    parser.add_argument("--no-baseline", action="store_true", help="only the search with faults")
    parser.add_argument("--folder", help="where everything goes (default: a temporary folder, deleted)")
    args = parser.parse_args()
    # SIGTERM (a job's end, `kill`) ends the services this script started, as an error does.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    os.environ["RAY_AUTH_MODE"] = "disabled"
    faults = [kind for kind in FAULT_KINDS for _ in range(args.faults)]
    random.Random(args.seed).shuffle(faults)
    with tempfile.TemporaryDirectory(prefix="chaos-") as scratch:
        folder = Path(args.folder or scratch).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        services = start_services(folder)
        outcomes = []
        try:
            for name, its_faults in ([] if args.no_baseline else [("calm", [])]) + [("chaos", faults)]:
                print(f"search {name!r}: {args.trials} trials x {args.epochs} epochs, faults {its_faults}", flush=True)
                outcome = run_search(name, services, args, its_faults)
                check(outcome, services, args)
                outcomes.append(outcome)
        finally:
            services.stop()
    print("\n".join(table(outcomes)))
    failures = [failure for outcome in outcomes for failure in outcome.failures]
    for failure in failures:
        print(f"FAILED: {failure}")
    if len(outcomes) == 2:
        print(f"ratio chaos/calm wall time: {outcomes[1].wall_s / outcomes[0].wall_s:.2f}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
