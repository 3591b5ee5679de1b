"""Search efficiency: how much of random search's epoch budget each searcher needs to match it.

Random search without early stopping runs ``--random-trials`` full trials: its budget is
B = trials x epochs and its best validation Recall@1 the target. On the same space, data and
seed, and with the same number of trials at a time, the other arms are:

- ``random+asha``: random sampling, ASHA early stopping (``--asha-trials`` trials);
- ``tpe``: Optuna TPE without early stopping (``--random-trials`` trials, the same budget);
- ``tpe+asha``: this tool's default, Optuna TPE + ASHA through Ray Tune (``--asha-trials``);
- ``gp+asha``: Optuna's Gaussian-process sampler (same start-up trials) + ASHA (``--asha-trials``);
- ``optuna``: what a user would pick instead of this tool: a plain Optuna study, TPE (same
  settings and startup trials) + Optuna's HyperbandPruner (same grace period and reduction
  factor), ``study.optimize(n_jobs=--max-concurrent)`` threads, no Ray, no MLflow
  (``--asha-trials`` trials, the data decoded once).

Every arm's epochs are counted in the order they finished (across concurrent trials) and only
the first B count. Reported per arm, as the median over seeds: the fraction of B it spent
before its best validation Recall@1 first reached random search's best, and the wall-clock
seconds from the arm's start (Ray's and the store's start-up included) to that moment.
Target for ``tpe+asha``: median fraction <= 1/3.

    python benchmarks/search_efficiency.py                        # 5 seeds x 5 arms, ~2.5 h on 2 cores
    python benchmarks/search_efficiency.py --seeds 0 --arms random tpe+asha optuna

Table, results.json and search_efficiency.png go to ``--out`` (default runs/search-efficiency).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna

from tune_lsd import tracking
from tune_lsd.data.splits import build_splits
from tune_lsd.engine import Trainer
from tune_lsd.search import SearchSettings, optuna_sampler, prepare_space, run_search

METRIC = "val/recall@1"
RAY_ARMS = {  # arm: (searcher, scheduler, which trial count)
    "random": ("random", "fifo", "random_trials"),
    "random+asha": ("random", "asha", "asha_trials"),
    "tpe": ("optuna", "fifo", "random_trials"),
    "tpe+asha": ("optuna", "asha", "asha_trials"),
    "gp+asha": ("gp", "asha", "asha_trials"),
}
ARMS = [*RAY_ARMS, "optuna"]

Curve = list[tuple[float, float]]  # (seconds since the arm started, best value so far), one per epoch


def best_so_far(points: list[tuple[float, float]]) -> Curve:
    """(time, value) of every epoch, any order -> the best value after each epoch, in finishing order."""
    curve, best = [], -math.inf
    for seconds, value in sorted(points):
        best = max(best, value)
        curve.append((seconds, best))
    return curve


def settings_for(arm: str, seed: int, args: argparse.Namespace) -> SearchSettings:
    searcher, scheduler, trials = RAY_ARMS.get(arm, ("optuna", "asha", "asha_trials"))
    return SearchSettings(
        name=f"efficiency-seed{seed}-{arm.replace('+', '-')}",
        space=args.space,
        searcher=searcher,
        scheduler=scheduler,
        num_samples=getattr(args, trials),
        max_concurrent=args.max_concurrent,
        seed=seed,
        runs_dir=str(args.out),
        overrides=args.set,
    )


def run_ray_arm(settings: SearchSettings) -> Curve:
    """A tune_lsd search; its epochs' times come from the MLflow timestamps of each point."""
    started = time.time()
    run_search(settings)
    uri = settings.resolved_tracking_uri()
    return best_so_far(
        [
            (timestamp / 1000 - started, value)
            for run in tracking.trial_runs(uri, settings.name)
            for _, value, timestamp in tracking.metric_history(uri, run.info.run_id, METRIC)
        ]
    )


def run_plain_optuna(settings: SearchSettings) -> Curve:
    """The same search as TPE + ASHA, written as a user would with Optuna alone."""
    started = time.time()
    space = prepare_space(settings)
    base = space.base_config()
    splits = build_splits(base.data, base.seed)  # decoded once, shared by every trial (as Ray's object store does)
    epochs, points, lock = base.schedule.epochs, [], threading.Lock()
    suggest = space.optuna_space()  # the search's own define-by-run function

    def objective(trial: optuna.Trial) -> float:
        suggest(trial)
        config = space.trial_config(trial.params).with_overrides({"runtime.threads": 1, "runtime.progress": False})
        trainer, best = Trainer(config, splits=splits), -math.inf
        for epoch in range(1, epochs + 1):
            value = trainer.run_epoch()[METRIC]
            with lock:
                points.append((time.time() - started, value))
            best = max(best, value)
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return best

    study = optuna.create_study(
        direction="maximize",
        sampler=optuna_sampler(settings),  # TPE, as the search's
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=settings.grace_period, max_resource=epochs, reduction_factor=int(settings.reduction_factor)
        ),
    )
    study.optimize(objective, n_trials=settings.num_samples, n_jobs=settings.max_concurrent)
    return best_so_far(points)


def run_seed(seed: int, args: argparse.Namespace) -> dict[str, Curve]:
    curves = {}
    for arm in args.arms:
        settings = settings_for(arm, seed, args)
        curves[arm] = run_plain_optuna(settings) if arm == "optuna" else run_ray_arm(settings)
        print(
            f"seed {seed} {arm}: {len(curves[arm])} epochs, best {curves[arm][-1][1]:.4f}, {curves[arm][-1][0]:.0f} s",
            flush=True,
        )
    return curves


def epochs_and_seconds_to_match(random_curve: Curve, curve: Curve) -> tuple[float, float]:
    """Share of random search's epoch budget ``curve`` used to match random's best, and the
    seconds it took (inf, inf: not within the budget)."""
    budget, target = len(random_curve), random_curve[-1][1]
    for spent, (seconds, value) in enumerate(curve[:budget], start=1):
        if value >= target:
            return spent / budget, seconds
    return math.inf, math.inf


def plot(results: dict[int, dict[str, Curve]], path: Path) -> None:
    seeds = sorted(results)
    figure, axes = plt.subplots(1, len(seeds), figsize=(4 * len(seeds), 3.6), squeeze=False, sharey=True)
    for axis, seed in zip(axes[0], seeds):
        budget = len(results[seed]["random"])
        for index, (arm, curve) in enumerate(results[seed].items()):
            values = [value for _, value in curve[:budget]]
            axis.step(
                range(1, len(values) + 1),
                values,
                "--" if arm == "random" else "-",
                where="post",
                color=f"C{index}",
                label=arm,
            )
        axis.set_title(f"seed {seed}")
        axis.set_xlabel("epochs trained (finishing order)")
    axes[0][0].set_ylabel(f"best {METRIC} so far")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _median(values: list[float], digits: int = 2) -> str:
    median = statistics.median(values)
    return f"{median:.{digits}f}" if math.isfinite(median) else "not reached"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=ARMS, help="random is always run (the target)")
    parser.add_argument("--space", default="lsd")
    parser.add_argument("--random-trials", type=int, default=6, help="random search trials; budget = these x epochs")
    parser.add_argument("--asha-trials", type=int, default=16, help="trials of the early-stopping arms")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="base-config overrides for every arm")
    parser.add_argument("--out", type=Path, default=Path("runs/search-efficiency"))
    args = parser.parse_args()
    args.arms = ["random", *[arm for arm in args.arms if arm != "random"]]
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    args.out = args.out.resolve()

    results = {seed: run_seed(seed, args) for seed in args.seeds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    plot(results, args.out / "search_efficiency.png")

    print(f"\nplot: {args.out / 'search_efficiency.png'}\n")
    print(
        "| seed | budget (epochs) | random best | "
        + " | ".join(f"{arm}: best in budget / fraction / s" for arm in args.arms[1:])
        + " | random s |"
    )
    print("|---|---|---|" + "---|" * len(args.arms))
    matched: dict[str, list[tuple[float, float]]] = {arm: [] for arm in args.arms[1:]}
    for seed, curves in sorted(results.items()):
        random_curve = curves["random"]
        budget = len(random_curve)
        cells = []
        for arm in args.arms[1:]:
            fraction, seconds = epochs_and_seconds_to_match(random_curve, curves[arm])
            matched[arm].append((fraction, seconds))
            shown = f"{fraction:.2f} / {seconds:.0f}" if math.isfinite(fraction) else "not reached / -"
            cells.append(f"{curves[arm][:budget][-1][1]:.4f} / {shown}")
        print(
            f"| {seed} | {budget} | {random_curve[-1][1]:.4f} | "
            + " | ".join(cells)
            + f" | {random_curve[-1][0]:.0f} |"
        )
    print("\n| arm | median fraction of random's budget to match it | median seconds to match it | seeds matched |")
    print("|---|---|---|---|")
    for arm, pairs in matched.items():
        print(
            f"| {arm} | {_median([f for f, _ in pairs])} | {_median([s for _, s in pairs], digits=0)} | "
            f"{sum(math.isfinite(f) for f, _ in pairs)}/{len(pairs)} |"
        )
    if "tpe+asha" in matched:
        print(
            f"ratio (median fraction of random's budget TPE+ASHA needs): "
            f"{_median([f for f, _ in matched['tpe+asha']])} (target <= 0.33)"
        )


if __name__ == "__main__":
    main()
