"""Evaluation: tune_lsd's retrieval_metrics against pytorch-metric-learning's AccuracyCalculator
on the same embeddings (default 50k x 128, 500 classes of 100): identical numbers and speed.

Each method runs in its own process (so peak memory is its own), twice, fastest run kept.
Compared: Recall@1 (PML: precision_at_1), MAP@R, R-precision. NMI is left out of the timing
(both use k-means, whose result depends on initialisation).

    python benchmarks/evaluation.py [--n 50000] [--dim 128] [--classes 500]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def embeddings(n: int, dim: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.standard_normal((classes, dim)).astype(np.float32)
    x = centres[labels] + 1.5 * rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), labels


def measure(method: str, n: int, dim: int, classes: int) -> dict:
    x, labels = embeddings(n, dim, classes)
    best = float("inf")
    for _ in range(2):
        started = time.perf_counter()
        if method == "tune_lsd":
            from tune_lsd.metrics import retrieval_metrics

            m = retrieval_metrics(x, labels, ks=(1,), nmi=False)
            values = {"recall@1": m["recall@1"], "map@r": m["map@r"], "r_precision": m["r_precision"]}
        else:
            import torch
            from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

            calculator = AccuracyCalculator(
                include=("precision_at_1", "mean_average_precision_at_r", "r_precision"),
                k="max_bin_count",
                device=torch.device("cpu"),
            )
            m = calculator.get_accuracy(torch.from_numpy(x), torch.from_numpy(labels))
            values = {
                "recall@1": m["precision_at_1"],
                "map@r": m["mean_average_precision_at_r"],
                "r_precision": m["r_precision"],
            }
        best = min(best, time.perf_counter() - started)
    return {"seconds": best, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **values}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--classes", type=int, default=500)
    parser.add_argument("--method", choices=["tune_lsd", "pml"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.method:
        print(json.dumps(measure(args.method, args.n, args.dim, args.classes)))
        return
    results = {}
    for method in ("tune_lsd", "pml"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--method",
                method,
                "--n",
                str(args.n),
                "--dim",
                str(args.dim),
                "--classes",
                str(args.classes),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:  # -9: the kernel's OOM killer (PML at 50k x 128 on 24 GiB)
            print(
                f"{method} failed with exit code {out.returncode}"
                + (" (killed: out of memory)" if out.returncode == -9 else "")
            )
            print("ratio pml/tune_lsd time: n/a (one method did not finish)")
            return
        results[method] = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"| method ({args.n} x {args.dim}, {args.classes} classes) "
        "| seconds | peak RSS (MB) | Recall@1 | MAP@R | R-precision |"
    )
    print("|---|---|---|---|---|---|")
    for method, r in results.items():
        print(
            f"| {method} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['recall@1']:.6f} | {r['map@r']:.6f} "
            f"| {r['r_precision']:.6f} |"
        )
    difference = max(abs(results["tune_lsd"][k] - results["pml"][k]) for k in ("recall@1", "map@r", "r_precision"))
    print(f"largest metric difference: {difference:.2e}")
    print(f"ratio pml/tune_lsd time: {results['pml']['seconds'] / results['tune_lsd']['seconds']:.2f}x")


if __name__ == "__main__":
    main()
