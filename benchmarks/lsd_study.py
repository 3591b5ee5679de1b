"""The LSD study: does LSD beat the same base loss without it, each tuned with the same budget?

Two regimes (``--regime``), each with its own pair of search spaces:

- ``scratch``: resnet10t trained from random weights on 32 px glyphs (spaces ``lsd`` and
  ``baseline``);
- ``pretrained``: the paper's regime scaled down, EfficientNet-Lite0 with its offline ImageNet
  weights and frozen BatchNorm fine-tuned on 48 px glyphs (``lsd_pretrained`` and
  ``baseline_pretrained``).

For each regime and label-noise rate (symmetric noise on the training labels only; validation
and test labels stay clean):

1. search the LSD space and the baseline space (LSD off, the same shared parameters lr and
   weight decay) with the same searcher, scheduler and number of trials;
2. export each search's best configuration and retrain it on all search classes with seeds
   0 .. N-1 (the same seeds on both sides: paired runs); each retrain tests once on the
   held-out test classes;
3. report mean +- std test Recall@1 and MAP@R (with the untrained network and raw pixels on
   the same test classes as floors) and, per seed pair, the LSD - baseline difference: its
   mean, a paired bootstrap 95 % interval, and whether LSD wins, loses or neither.

    python benchmarks/lsd_study.py                          # both regimes, ~80 min on 2 cores
    python benchmarks/lsd_study.py --regime pretrained      # ~40 min on 2 cores
    python benchmarks/lsd_study.py --regime pretrained --max-concurrent 4   # on one GPU (4 x 0.25 of it)
    python benchmarks/lsd_study.py --report-only            # the tables and plot again

Results (results.json, study.png) go to ``--out`` (default runs/lsd-study); a regime run later
is added to the same results.json, so the tables can hold both regimes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import scipy.stats
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from search_spaces.loader import load_space  # noqa: E402
from tune_lsd.config import Config  # noqa: E402
from tune_lsd.export import export_best_config  # noqa: E402
from tune_lsd.search import SearchSettings, run_search  # noqa: E402
from tune_lsd.train import train_and_test  # noqa: E402

REGIMES = {"scratch": {"lsd": "lsd", "baseline": "baseline"},
           "pretrained": {"lsd": "lsd_pretrained", "baseline": "baseline_pretrained"}}
METHODS = {"lsd": "LSD (tuned)", "baseline": "base loss only (tuned)"}
METRICS = {"test/recall@1": "R@1", "test/map@r": "MAP@R"}

Summaries = dict[str, list[dict[str, Any]]]  # method -> one retrain summary per seed


def study_one_noise(regime: str, noise: float, args: argparse.Namespace) -> Summaries:
    """Search both spaces of ``regime`` at this noise rate, retrain each winner with every seed."""
    summaries: Summaries = {}
    for method, space in REGIMES[regime].items():
        name = f"study-{regime}-noise{noise:g}-{method}"
        settings = SearchSettings(name=name, space=space, num_samples=args.num_samples,
                                  max_concurrent=args.max_concurrent, gpus_per_trial=args.gpus_per_trial,
                                  seed=args.search_seed, runs_dir=str(args.out),
                                  overrides=[f"data.label_noise={noise}", *args.set])
        run_search(settings)
        exported = export_best_config(settings.resolved_tracking_uri(), name, args.out / name / "best.yaml")
        print(f"{regime}, noise {noise:g}, {method}: search done, best trial {exported['trial']} "
              f"val R@1 {exported['value']:.4f}", flush=True)
        best = Config.load(args.out / name / "best.yaml")
        summaries[method] = []
        for seed in range(args.seeds):
            config = best.with_overrides({"seed": seed, "runtime.progress": False, "runtime.threads": args.threads,
                                          **({"schedule.steps_per_epoch": args.steps} if args.steps else {})})
            summary = train_and_test(config, args.out / name / f"retrain-seed{seed}", log=lambda line: None)
            summaries[method].append(summary)
            print(f"{regime}, noise {noise:g}, {method}: retrain seed {seed}: test R@1 "
                  f"{summary['test']['test/recall@1']:.4f} MAP@R {summary['test']['test/map@r']:.4f} "
                  f"({summary['train_s']:.0f} s)", flush=True)
    return summaries


def study_one_regime(regime: str, args: argparse.Namespace) -> dict[str, Any]:
    """Every noise rate of one regime, with what was searched and how long it took."""
    started = time.perf_counter()
    noise = {f"{rate:g}": study_one_noise(regime, rate, args) for rate in args.noise}
    trained = Config.load(args.out / f"study-{regime}-noise{args.noise[0]:g}-lsd" / "best.yaml")  # with --set applied
    weights = "ImageNet weights" if trained.model.pretrained != "none" else "random init"
    return {"description": f"{trained.model.backbone}, {weights}, {trained.data.image_size} px, "
                          f"{trained.schedule.epochs} epochs",
            "searched_params": {method: sorted(load_space(space).params) for method, space in REGIMES[regime].items()},
            "num_samples": args.num_samples, "seconds": time.perf_counter() - started, "noise": noise}


def paired_bootstrap_interval(differences: list[float], confidence: float = 0.95, resamples: int = 10_000,
                              seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of paired differences (the seed pairs are
    resampled with replacement, so each pair's two runs stay together)."""
    values = np.asarray(differences, dtype=float)
    if np.ptp(values) == 0:  # every resample has the same mean
        return float(values[0]), float(values[0])
    result = scipy.stats.bootstrap((values,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                   method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_t_interval(differences: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of paired differences: a check on the bootstrap, whose
    percentile interval is too narrow with as few as 5 pairs."""
    values = np.asarray(differences, dtype=float)
    if np.ptp(values) == 0:
        return float(values[0]), float(values[0])
    interval = scipy.stats.ttest_1samp(values, 0.0).confidence_interval(confidence)
    return float(interval.low), float(interval.high)


def verdict(low: float, high: float) -> str:
    """What a 95 % interval of LSD - baseline says."""
    return "LSD wins" if low > 0 else "LSD loses" if high < 0 else "no clear difference"


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def table_rows(regime: str, noise: str, summaries: Summaries) -> list[tuple[str, dict[str, list[float]]]]:
    """(row label, {metric: values over seeds}) for the floors and both tuned methods."""
    # Both methods retrain with the same seeds, so the untrained networks repeat: count each seed once.
    first = summaries["baseline"]
    rows = [("raw pixels", {m: [first[0]["raw_pixels"][m]] for m in METRICS}),
            ("untrained network", {m: [s["untrained"][m] for s in first] for m in METRICS})]
    rows += [(METHODS[method], {m: [s["test"][m] for s in summaries[method]] for m in METRICS}) for method in METHODS]
    return [(f"{regime}, {float(noise):.0%} noise: {label}", values) for label, values in rows]


def paired_differences(summaries: Summaries, metric: str) -> list[float]:
    """LSD - baseline per seed (retrain i of each side used seed i)."""
    return [lsd["test"][metric] - base["test"][metric] for lsd, base in zip(summaries["lsd"], summaries["baseline"])]


def plot(rows: list[tuple[str, dict[str, list[float]]]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(METRICS), figsize=(12, 0.5 + 0.4 * len(rows)), sharey=True)
    labels = [label for label, _ in rows]
    for axis, (metric, short) in zip(axes, METRICS.items()):
        means = [statistics.mean(v[metric]) for _, v in rows]
        spreads = [statistics.stdev(v[metric]) if len(v[metric]) > 1 else 0 for _, v in rows]
        colours = ["tab:orange" if "LSD" in label else "tab:blue" if "tuned" in label else "tab:gray" for label in labels]
        axis.barh(labels, means, xerr=spreads, color=colours)
        axis.set_xlabel(f"test {short} (mean ± std over seeds)")
    axes[0].invert_yaxis()  # shared y axis: first row on top
    figure.suptitle("LSD study on the glyph test classes")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def print_report(results: dict[str, Any], out: Path) -> None:
    """The tables, the plot and the ratios, from every regime's retrain summaries."""
    rows = [row for regime, study in results.items() for noise, summaries in study["noise"].items()
            for row in table_rows(regime, noise, summaries)]
    plot(rows, out / "study.png")
    print(f"\nplot: {out / 'study.png'}")
    for regime, study in results.items():
        searched = ", ".join(f"{METHODS[m]} {len(p)} ({', '.join(p)})" for m, p in study["searched_params"].items())
        print(f"{regime}: {study['description']}; {study['num_samples']} trials per search; searched parameters: "
              f"{searched}; {study['seconds'] / 60:.1f} min")
    print("\n| setting | test Recall@1 | test MAP@R | runs |")
    print("|---|---|---|---|")
    for label, values in rows:
        print(f"| {label} | {mean_std(values['test/recall@1'])} | {mean_std(values['test/map@r'])} "
              f"| {len(values['test/recall@1'])} |")
    print("\nLSD - baseline per seed pair: mean [paired bootstrap 95 % interval] (Student-t 95 % interval): verdict")
    print("\n| regime, noise | test R@1 | test MAP@R | seed pairs |")
    print("|---|---|---|---|")
    for regime, study in results.items():
        for noise, summaries in study["noise"].items():
            cells = []
            for metric in METRICS:
                differences = paired_differences(summaries, metric)
                low, high = paired_bootstrap_interval(differences)
                t_low, t_high = paired_t_interval(differences)
                cell = (f"{statistics.mean(differences):+.4f} [{low:+.4f}, {high:+.4f}] "
                        f"(t: [{t_low:+.4f}, {t_high:+.4f}]): {verdict(low, high)}")
                if verdict(t_low, t_high) != verdict(low, high):
                    cell += f" (t: {verdict(t_low, t_high)})"
                cells.append(cell)
            print(f"| {regime}, {float(noise):.0%} | {cells[0]} | {cells[1]} | {len(differences)} |")
    print()
    for regime, study in results.items():
        for noise, summaries in study["noise"].items():
            lsd, base = (statistics.mean(s["test"]["test/recall@1"] for s in summaries[m]) for m in METHODS)
            print(f"ratio LSD/baseline test R@1, {regime} at {float(noise):.0%} noise: {lsd / base:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", nargs="+", choices=list(REGIMES), default=list(REGIMES))
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3], help="label-noise rates to study")
    parser.add_argument("--num-samples", type=int, default=8, help="trials per search (the same for both spaces)")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=5, help="paired retrains of each exported config")
    parser.add_argument("--gpus-per-trial", type=float, default=None,
                        help="GPU share of each search trial (default: 1 / --max-concurrent with a GPU, else 0)")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each retrain")
    parser.add_argument("--steps", type=int, default=0, help="cap retrain steps per epoch (0 = all; for a tiny run)")
    parser.add_argument("--set", action="append", default=[], help="extra base-config overrides for every search")
    parser.add_argument("--out", type=Path, default=Path("runs/lsd-study"))
    parser.add_argument("--report-only", action="store_true", help="reprint the tables and plot from --out/results.json")
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
