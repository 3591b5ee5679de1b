"""The LSD study: does LSD beat the same base loss without it, each tuned with the same budget?

A thin use of ``tune-lsd compare`` (tune_lsd/compare/) over two regimes and label-noise rates:

- ``scratch``: resnet10t trained from random weights on 32 px glyphs (spaces ``lsd`` and
  ``baseline``);
- ``pretrained``: the paper's regime scaled down, EfficientNet-Lite0 with its offline ImageNet
  weights and frozen BatchNorm fine-tuned on 48 px glyphs (``lsd_pretrained`` and
  ``baseline_pretrained``).

For each regime and noise rate (symmetric noise on the training labels only; validation and
test labels stay clean) one comparison ``study-REGIME-noiseN`` searches both spaces with the
same searcher, scheduler and trials (``--search-seeds`` searches each), retrains each winner
with seeds 0 .. N-1 on both sides and tests once. This prints mean +- std test Recall@1 and
MAP@R per method with the untrained network and raw pixels as floors, and the LSD - baseline
paired differences with their bootstrap and Student-t 95 % intervals and verdicts.

    python benchmarks/lsd_study.py                          # both regimes, ~80 min on 2 cores
    python benchmarks/lsd_study.py --regime pretrained      # ~40 min on 2 cores
    python benchmarks/lsd_study.py --regime pretrained --max-concurrent 4   # on one GPU (4 x 0.25 of it)
    python benchmarks/lsd_study.py --report-only            # the tables and plot again

Results (results.json, study.png) go to ``--out`` (default runs/lsd-study), with each
comparison's MLflow experiment, page (``reports/study-.../compare.html``) and state; an
interrupted study continues where it stopped when run again with the same arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import matplotlib
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from search_spaces.loader import load_space
from tune_lsd.compare import CompareSettings, resume_compare, run_compare
from tune_lsd.compare.study import STATE_FILE
from tune_lsd.config import Config

REGIMES = {
    "scratch": {"lsd": "lsd", "baseline": "baseline"},
    "pretrained": {"lsd": "lsd_pretrained", "baseline": "baseline_pretrained"},
}
METHODS = {"lsd": "LSD (tuned)", "baseline": "base loss only (tuned)"}
METRICS = {"test/recall@1": "R@1", "test/map@r": "MAP@R"}


def study_one_noise(regime: str, noise: float, args: argparse.Namespace) -> dict[str, Any]:
    """One comparison: both spaces of ``regime`` at this noise rate (continued if it was stopped)."""
    spaces = REGIMES[regime]
    settings = CompareSettings(
        name=f"study-{regime}-noise{noise:g}",
        spaces=[spaces["lsd"], spaces["baseline"]],
        num_samples=args.num_samples,
        search_seeds=args.search_seeds,
        seeds=args.seeds,
        max_concurrent=args.max_concurrent,
        gpus_per_trial=args.gpus_per_trial,
        threads=args.threads,
        runs_dir=str(args.out),
        overrides=[
            f"data.label_noise={noise}",
            *args.set,
            *([f"schedule.steps_per_epoch={args.steps}"] if args.steps else []),
        ],
    )
    if (settings.folder / STATE_FILE).exists():
        return resume_compare(settings.name, str(args.out))
    return run_compare(settings)


def study_one_regime(regime: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every noise rate of one regime, with what was searched and how long it took."""
    noise = {f"{rate:g}": study_one_noise(regime, rate, args) for rate in args.noise}
    first = next(iter(noise.values()))
    trained = Config.load(Path(first["retrains"][0]["best_file"]))
    weights = "ImageNet weights" if trained.model.pretrained != "none" else "random init"
    return {
        "description": f"{trained.model.backbone}, {weights}, {trained.data.image_size} px, "
        f"{trained.schedule.epochs} epochs",
        "searched_params": {method: sorted(load_space(space).params) for method, space in REGIMES[regime].items()},
        "num_samples": args.num_samples,
        "seconds": sum(c["seconds"] for c in noise.values()),
        "noise": noise,
    }


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def table_rows(regime: str, noise: str, comparison: dict[str, Any]) -> list[tuple[str, dict[str, list[float]]]]:
    """(row label, {metric: values over retrains}) for the floors and both tuned methods."""
    rows = [(floor, {m: [values[m]] for m in METRICS}) for floor, values in comparison["floors"].items()]
    for method, space in REGIMES[regime].items():
        retrains = [r for r in comparison["retrains"] if r["space"] == space]
        rows.append((METHODS[method], {m: [r["metrics"][m] for r in retrains] for m in METRICS}))
    return [(f"{regime}, {float(noise):.0%} noise: {label}", values) for label, values in rows]


def plot(rows: list[tuple[str, dict[str, list[float]]]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(METRICS), figsize=(12, 0.5 + 0.4 * len(rows)), sharey=True)
    labels = [label for label, _ in rows]
    for axis, (metric, short) in zip(axes, METRICS.items()):
        means = [statistics.mean(v[metric]) for _, v in rows]
        spreads = [statistics.stdev(v[metric]) if len(v[metric]) > 1 else 0 for _, v in rows]
        colours = [
            "tab:orange" if "LSD" in label else "tab:blue" if "tuned" in label else "tab:gray" for label in labels
        ]
        axis.barh(labels, means, xerr=spreads, color=colours)
        axis.set_xlabel(f"test {short} (mean ± std over retrains)")
    axes[0].invert_yaxis()  # shared y axis: first row on top
    figure.suptitle("LSD study on the glyph test classes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_report(results: dict[str, Any], out: Path) -> None:
    """The tables, the plot and the ratios, from every comparison's results."""
    rows = [
        row
        for regime, study in results.items()
        for noise, comparison in study["noise"].items()
        for row in table_rows(regime, noise, comparison)
    ]
    plot(rows, out / "study.png")
    print(f"\nplot: {out / 'study.png'}")
    for regime, study in results.items():
        searched = ", ".join(f"{METHODS[m]} {len(p)} ({', '.join(p)})" for m, p in study["searched_params"].items())
        print(
            f"{regime}: {study['description']}; {study['num_samples']} trials per search; searched parameters: "
            f"{searched}; {study['seconds'] / 60:.1f} min"
        )
    print("\n| setting | test Recall@1 | test MAP@R | runs |")
    print("|---|---|---|---|")
    for label, values in rows:
        print(
            f"| {label} | {mean_std(values['test/recall@1'])} | {mean_std(values['test/map@r'])} "
            f"| {len(values['test/recall@1'])} |"
        )
    print(
        "\nLSD - baseline, paired: mean [bootstrap 95 % interval] (Student-t 95 % interval), over retrain seeds "
        "and over search seeds; verdicts from tune-lsd compare"
    )
    print("\n| regime, noise | test R@1 | test MAP@R | pairs |")
    print("|---|---|---|---|")
    for regime, study in results.items():
        for noise, comparison in study["noise"].items():
            for level in ("retrain seeds", "search seeds"):
                cells, count = [], 0
                for metric in METRICS:
                    d = next(d for d in comparison["differences"] if d["metric"] == metric and d["level"] == level)
                    count = len(d["values"])
                    cells.append(
                        f"{d['mean']:+.4f}"
                        + (
                            ""
                            if d["bootstrap"] is None
                            else f" [{d['bootstrap'][0]:+.4f}, {d['bootstrap'][1]:+.4f}] "
                            f"(t: [{d['student_t'][0]:+.4f}, {d['student_t'][1]:+.4f}])"
                        )
                    )
                print(f"| {regime}, {float(noise):.0%}, over {level} | {cells[0]} | {cells[1]} | {count} |")
            print(f"{regime}, {float(noise):.0%} noise: {comparison['verdict']}")
    print()
    for regime, study in results.items():
        for noise, comparison in study["noise"].items():
            lsd, base = (
                statistics.mean(
                    r["metrics"]["test/recall@1"] for r in comparison["retrains"] if r["space"] == REGIMES[regime][m]
                )
                for m in METHODS
            )
            print(f"ratio LSD/baseline test R@1, {regime} at {float(noise):.0%} noise: {lsd / base:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3], help="label-noise rates to study")
    parser.add_argument("--num-samples", type=int, default=8, help="trials per search (the same for both spaces)")
    parser.add_argument("--search-seeds", type=int, default=1, help="searches per space")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="paired retrains of each exported config")
    parser.add_argument(
        "--gpus-per-trial",
        type=float,
        default=None,
        help="GPU share of each search trial (default: 1 / --max-concurrent with a GPU, else 0)",
    )
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each retrain")
    parser.add_argument("--steps", type=int, default=0, help="cap steps per epoch (0 = all; for a tiny run)")
    parser.add_argument("--set", action="append", default=[], help="extra base-config overrides for every search")
    parser.add_argument("--out", type=Path, default=Path("runs/lsd-study"))
    parser.add_argument(
        "--report-only", action="store_true", help="reprint the tables and plot from --out/results.json"
    )
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args.out = args.out.resolve()
    if args.gpus_per_trial is None:
        args.gpus_per_trial = 1 / args.max_concurrent if torch.cuda.is_available() else 0.0

    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    if args.report_only and not results:
        parser.error(f"no study results in {results_file}: run the study first")
    if not args.report_only:
        args.out.mkdir(parents=True, exist_ok=True)
        for regime in args.regime:
            results[regime] = study_one_regime(regime, args)
            results_file.write_text(json.dumps(results, indent=2, default=str))  # a finished regime is kept
    print_report({regime: results[regime] for regime in REGIMES if regime in results}, args.out)


if __name__ == "__main__":
    main()
