"""Search efficiency: Optuna TPE + ASHA against random search without early stopping.

Random search runs ``--random-trials`` full trials (its budget B = trials x epochs). TPE + ASHA
runs on the same space, seed and data; its epochs are counted in the order they finished
(across concurrent trials) and only the first B count. Reported per seed: the fraction of B
that TPE + ASHA spent before its best validation Recall@1 first reached random search's
best. Target: <= 1/3.

    python benchmarks/search_efficiency.py                 # 3 seeds, ~45 min on 2 cores
    python benchmarks/search_efficiency.py --seeds 0 1 2 --random-trials 6 --asha-trials 16

Table, results.json and search_efficiency.png go to ``--out`` (default runs/search-efficiency).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tune_lsd import tracking  # noqa: E402
from tune_lsd.search import SearchSettings, run_search  # noqa: E402

METRIC = "val/recall@1"


def best_so_far(tracking_uri: str, search: str) -> list[float]:
    """Best validation Recall@1 after each epoch the search trained, epochs in finishing order."""
    points = [(timestamp, value) for run in tracking.trial_runs(tracking_uri, search)
              for _, value, timestamp in tracking.metric_history(tracking_uri, run.info.run_id, METRIC)]
    curve, best = [], -math.inf
    for _, value in sorted(points):
        best = max(best, value)
        curve.append(best)
    return curve


def run_pair(seed: int, args: argparse.Namespace) -> dict[str, list[float]]:
    """Random + FIFO and TPE + ASHA on one seed; each search's best-so-far curve."""
    curves = {}
    for label, searcher, scheduler, trials in (("random", "random", "fifo", args.random_trials),
                                               ("tpe+asha", "optuna", "asha", args.asha_trials)):
        settings = SearchSettings(name=f"efficiency-seed{seed}-{label.replace('+', '-')}", space=args.space,
                                  searcher=searcher, scheduler=scheduler, num_samples=trials,
                                  max_concurrent=args.max_concurrent, seed=seed, runs_dir=str(args.out),
                                  overrides=args.set)
        run_search(settings)
        curves[label] = best_so_far(settings.resolved_tracking_uri(), settings.name)
    return curves


def fraction_needed(random_curve: list[float], asha_curve: list[float]) -> float:
    """Share of random search's epoch budget TPE + ASHA used to match random's best (inf: never)."""
    budget, target = len(random_curve), random_curve[-1]
    for spent, value in enumerate(asha_curve[:budget], start=1):
        if value >= target:
            return spent / budget
    return math.inf


def plot(results: dict[int, dict[str, list[float]]], path: Path) -> None:
    figure, axis = plt.subplots(figsize=(7, 4))
    for index, (seed, curves) in enumerate(sorted(results.items())):
        for label, style in (("random", "--"), ("tpe+asha", "-")):
            curve = curves[label][:len(curves["random"])]
            axis.step(range(1, len(curve) + 1), curve, style, where="post", color=f"C{index}",
                      label=f"seed {seed}: {label}")
    axis.set_xlabel("epochs trained (all trials, in finishing order)")
    axis.set_ylabel(f"best {METRIC} so far")
    axis.set_title("TPE + ASHA vs random search, same epoch budget")
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--space", default="lsd")
    parser.add_argument("--random-trials", type=int, default=6, help="random search trials; budget = these x epochs")
    parser.add_argument("--asha-trials", type=int, default=16, help="TPE + ASHA trials (enough to spend the budget)")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="base-config overrides for both searches")
    parser.add_argument("--out", type=Path, default=Path("runs/search-efficiency"))
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args.out = args.out.resolve()

    results = {seed: run_pair(seed, args) for seed in args.seeds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "search_efficiency.png")

    print(f"\nplot: {args.out / 'search_efficiency.png'}\n")
    print("| seed | budget (epochs) | random best | TPE+ASHA best within budget | TPE+ASHA epochs used | fraction of budget to match random |")
    print("|---|---|---|---|---|---|")
    fractions = []
    for seed, curves in sorted(results.items()):
        budget = len(curves["random"])
        within = curves["tpe+asha"][:budget]
        fraction = fraction_needed(curves["random"], curves["tpe+asha"])
        fractions.append(fraction)
        shown = f"{fraction:.2f}" if math.isfinite(fraction) else "not reached"
        print(f"| {seed} | {budget} | {curves['random'][-1]:.4f} | {within[-1]:.4f} | {len(within)} | {shown} |")
    median = statistics.median(fractions)
    print(f"ratio (median fraction of random's budget TPE+ASHA needs): "
          f"{median:.2f}" + (" (target <= 0.33)" if math.isfinite(median) else " (not reached; target <= 0.33)"))


if __name__ == "__main__":
    main()
