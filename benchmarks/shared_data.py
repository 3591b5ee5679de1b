"""Data once per node: 4 concurrent trials reading one copy of the decoded dataset from Ray's
object store, against 4 trials each decoding and holding their own copy.

Fashion-MNIST (Debian's dataset-fashion-mnist, 70k images) is decoded at 64 x 64 (~290 MB of
uint8), so the copies are visible in memory. Each trial trains 1 short epoch at 16 px.
Measured: the peak drop of the machine's MemAvailable during the search (sampled every 0.2 s)
and each trial's set-up time (data + model, reported by the trainable as time/setup_s).

    python benchmarks/shared_data.py            # prints a table, the ratio last
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from tune_lsd.tracking import default_tracking_uri

SETTINGS = ["--set", "data.dataset=fashion_mnist", "--set", "data.load_size=64", "--set", "data.image_size=16",
            "--set", "data.val_fraction=0.4", "--set", "data.max_classes=null", "--set", "data.batch_size=64",
            "--set", "schedule.steps_per_epoch=2", "--set", "schedule.epochs=1", "--set", "eval.batch_size=2048"]


def mem_available_mb() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def run(shared: bool, folder: Path) -> dict[str, float]:
    name = "shared" if shared else "copies"
    command = [sys.executable, "-m", "tune_lsd.cli", "search", "--space", "baseline", "--name", name,
               "--searcher", "random", "--scheduler", "fifo", "--num-samples", "4", "--max-concurrent", "4",
               "--cpus-per-trial", "0.5", *SETTINGS] + ([] if shared else ["--no-shared-data"])
    baseline = mem_available_mb()
    lowest = [baseline]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            lowest[0] = min(lowest[0], mem_available_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    result = subprocess.run(command, cwd=folder, capture_output=True, text=True, env={"RAY_AUTH_MODE": "disabled",
                            "PATH": "/usr/bin:/bin"})
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if result.returncode != 0:
        raise SystemExit(result.stderr[-2000:])
    client = MlflowClient(default_tracking_uri(folder / "runs"))
    experiment = client.get_experiment_by_name(name)
    runs = [r for r in client.search_runs([experiment.experiment_id]) if "mlflow.parentRunId" in r.data.tags]
    setups = [r.data.metrics["time/setup_s"] for r in runs]
    return {"peak_mb": baseline - lowest[0], "setup_s": statistics.mean(setups), "setup_max_s": max(setups),
            "wall_s": wall}


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        copies = run(False, Path(tmp))
        shared = run(True, Path(tmp))
    print("| mode | peak memory (MB, MemAvailable drop) | trial set-up mean / max (s) | search wall (s) |")
    print("|---|---|---|---|")
    for label, r in (("own copy per trial", copies), ("shared via object store", shared)):
        print(f"| {label} | {r['peak_mb']:.0f} | {r['setup_s']:.2f} / {r['setup_max_s']:.2f} | {r['wall_s']:.0f} |")
    print(f"ratio shared/copies: peak memory {shared['peak_mb'] / copies['peak_mb']:.2f}x, "
          f"trial set-up {shared['setup_s'] / copies['setup_s']:.2f}x")


if __name__ == "__main__":
    main()
