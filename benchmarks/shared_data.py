"""Data once per node: 4 concurrent trials reading one copy of the decoded dataset from Ray's
object store, against 4 trials each decoding and holding their own copy.

Fashion-MNIST (Debian's dataset-fashion-mnist, 70k images) is decoded at 64 x 64 (~290 MB of
uint8), so the copies are visible in memory. Each trial trains 1 short epoch at 16 px.
Measured: the peak of the summed proportional set size (PSS: shared pages split between the
processes that map them) of the search driver and every process it started, Ray's object
store (1000 MB, touched pages only) included, sampled every 0.2 s; and each trial's set-up time (data + model,
reported by
the trainable as time/trainer_s).

    python benchmarks/shared_data.py            # prints a table, the ratio last (~4 min)
    python benchmarks/shared_data.py --tiny     # a quick smoke run on the bundled glyphs
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tune_lsd.cluster import descendants
from tune_lsd.tracking import default_tracking_uri

SETTINGS = [
    "--set",
    "data.dataset=fashion_mnist",
    "--set",
    "data.load_size=64",
    "--set",
    "data.image_size=16",
    "--set",
    "data.val_fraction=0.4",
    "--set",
    "data.max_classes=null",
    "--set",
    "data.samples_per_class=16",
    "--set",
    "data.batch_size=48",
    "--set",
    "schedule.steps_per_epoch=2",
    "--set",
    "schedule.epochs=1",
    "--set",
    "eval.batch_size=2048",
]


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass  # the process ended meanwhile
    return 0.0


def memory_sample(root_pid: int) -> tuple[float, float]:
    """(summed PSS of the trial processes, summed PSS of the driver and all other processes) in MB."""
    trials = others = 0.0
    for pid in [root_pid, *descendants(root_pid)]:
        try:
            is_trial = b"Trainable" in Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if is_trial:
            trials += pss_mb(pid)
        else:
            others += pss_mb(pid)
    return trials, others


TINY = [
    "--set",
    "data.max_classes=40",
    "--set",
    "data.batch_size=64",
    "--set",
    "schedule.steps_per_epoch=2",
    "--set",
    "schedule.epochs=1",
]


def run(shared: bool, folder: Path, settings: list[str] = SETTINGS, trials: int = 4) -> dict[str, float]:
    name = "shared" if shared else "copies"
    command = [
        sys.executable,
        "-m",
        "tune_lsd.cli",
        "search",
        "--space",
        "baseline",
        "--name",
        name,
        "--searcher",
        "random",
        "--scheduler",
        "fifo",
        "--num-samples",
        str(trials),
        "--max-concurrent",
        str(trials),
        "--cpus-per-trial",
        str(2 / trials),
        "--object-store-mb",
        "1000",
        *settings,
    ] + ([] if shared else ["--no-shared-data"])
    process = subprocess.Popen(
        command,
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"RAY_AUTH_MODE": "disabled", "PATH": "/usr/bin:/bin"},
    )
    peak_trials: float = 0.0
    peak_total: float = 0.0
    started = time.perf_counter()
    while process.poll() is None:
        trials_mb, others_mb = memory_sample(process.pid)
        peak_trials, peak_total = max(peak_trials, trials_mb), max(peak_total, trials_mb + others_mb)
        time.sleep(0.2)
    wall = time.perf_counter() - started
    _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(stderr[-2000:])
    client = MlflowClient(default_tracking_uri(folder / "runs"))
    experiment = client.get_experiment_by_name(name)
    assert experiment is not None
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    setups = [r.data.metrics["time/trainer_s"] for r in runs]
    return {
        "trials_mb": peak_trials,
        "total_mb": peak_total,
        "setup_s": statistics.mean(setups),
        "setup_max_s": max(setups),
        "wall_s": wall,
    }


def main() -> None:
    tiny = "--tiny" in sys.argv  # the test suite's smoke run: 2 trials on the bundled glyphs
    settings, trials = (TINY, 2) if tiny else (SETTINGS, 4)
    with tempfile.TemporaryDirectory() as tmp:
        copies = run(False, Path(tmp), settings, trials)
        shared = run(True, Path(tmp), settings, trials)
    print(
        f"| mode | peak PSS of the {trials} trials (MB) | peak PSS of all processes (MB) "
        "| trial set-up mean / max (s) | search wall (s) |"
    )
    print("|---|---|---|---|---|")
    for label, r in (("own copy per trial", copies), ("shared via object store", shared)):
        print(
            f"| {label} | {r['trials_mb']:.0f} | {r['total_mb']:.0f} | {r['setup_s']:.2f} / {r['setup_max_s']:.2f} "
            f"| {r['wall_s']:.0f} |"
        )
    print(
        f"ratio shared/copies: trials' peak memory {shared['trials_mb'] / copies['trials_mb']:.2f}x, "
        f"all processes {shared['total_mb'] / copies['total_mb']:.2f}x, "
        f"trial set-up {shared['setup_s'] / copies['setup_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
