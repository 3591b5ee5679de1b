"""The LSD study: does LSD beat the same base loss without it, each tuned with the same budget?

For each label-noise rate (symmetric noise on the training labels only; validation and test
labels stay clean):

1. search the shipped ``lsd`` space and the ``baseline`` space (LSD off, the same shared
   parameters lr and weight decay) with the same searcher, scheduler and number of trials;
2. export each search's best configuration and retrain it on all search classes with
   several seeds; each retrain tests once on the held-out test classes;
3. report mean +- std test Recall@1 and MAP@R, with the untrained network and raw pixels on
   the same test classes as floors.

    python benchmarks/lsd_study.py                  # ~35 min on 2 cores
    python benchmarks/lsd_study.py --noise 0 --seeds 3 --num-samples 8
    python benchmarks/lsd_study.py --report-only     # the table and plot again, from results.json

Results (table, results.json, study.png) go to ``--out`` (default runs/lsd-study).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tune_lsd.config import Config  # noqa: E402
from tune_lsd.export import export_best_config  # noqa: E402
from tune_lsd.search import SearchSettings, run_search  # noqa: E402
from tune_lsd.train import train_and_test  # noqa: E402

METHODS = {"lsd": "LSD (tuned)", "baseline": "base loss only (tuned)"}
METRICS = {"test/recall@1": "R@1", "test/map@r": "MAP@R"}


def study_one_noise(noise: float, args: argparse.Namespace, out: Path) -> dict[str, list[dict[str, Any]]]:
    """Search both spaces at this noise rate, retrain each winner with every seed; per-run summaries."""
    summaries: dict[str, list[dict[str, Any]]] = {}
    for space in METHODS:
        name = f"study-noise{noise:g}-{space}"
        settings = SearchSettings(name=name, space=space, num_samples=args.num_samples,
                                  max_concurrent=args.max_concurrent, seed=args.search_seed, runs_dir=str(out),
                                  overrides=[f"data.label_noise={noise}", *args.set])
        run_search(settings)
        exported = export_best_config(settings.resolved_tracking_uri(), name, out / name / "best.yaml")
        print(f"noise {noise:g} {space}: search done, best trial {exported['trial']} val R@1 {exported['value']:.4f}",
              flush=True)
        best = Config.load(out / name / "best.yaml")
        summaries[space] = []
        for seed in range(args.seeds):
            config = best.with_overrides({"seed": seed, "runtime.progress": False, "runtime.threads": args.threads,
                                          **({"schedule.steps_per_epoch": args.steps} if args.steps else {})})
            summary = train_and_test(config, out / name / f"retrain-seed{seed}", log=lambda line: None)
            summaries[space].append(summary)
            print(f"noise {noise:g} {space}: retrain seed {seed}: test R@1 {summary['test']['test/recall@1']:.4f} "
                  f"MAP@R {summary['test']['test/map@r']:.4f} ({summary['train_s']:.0f} s)", flush=True)
    return summaries


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def table_rows(noise: float, summaries: dict[str, list[dict[str, Any]]]) -> list[tuple[str, dict[str, list[float]]]]:
    """(row label, {metric: values over seeds}) for the floors and both tuned methods."""
    # Both methods retrain with the same seeds, so the untrained networks repeat: count each seed once.
    first = next(iter(summaries.values()))
    rows = [("raw pixels", {m: [first[0]["raw_pixels"][m]] for m in METRICS}),
            ("untrained network", {m: [s["untrained"][m] for s in first] for m in METRICS})]
    rows += [(METHODS[space], {m: [s["test"][m] for s in runs] for m in METRICS}) for space, runs in summaries.items()]
    return [(f"{noise:.0%} noise: {label}", values) for label, values in rows]


def plot(rows: list[tuple[str, dict[str, list[float]]]], path: Path) -> None:
    figure, axes = plt.subplots(1, len(METRICS), figsize=(11, 0.5 + 0.45 * len(rows)), sharey=True)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3], help="label-noise rates to study")
    parser.add_argument("--num-samples", type=int, default=8, help="trials per search (the same for both spaces)")
    parser.add_argument("--max-concurrent", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3, help="retrains of each exported config")
    parser.add_argument("--search-seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each retrain")
    parser.add_argument("--steps", type=int, default=0, help="cap retrain steps per epoch (0 = all; for a tiny run)")
    parser.add_argument("--set", action="append", default=[], help="extra base-config overrides for both searches")
    parser.add_argument("--out", type=Path, default=Path("runs/lsd-study"))
    parser.add_argument("--report-only", action="store_true", help="reprint the table and plot from --out/results.json")
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    args.out = args.out.resolve()

    results_file = args.out / "results.json"
    if args.report_only:
        results = json.loads(results_file.read_text())
    else:
        results = {f"{noise:g}": study_one_noise(noise, args, args.out) for noise in args.noise}
        results_file.write_text(json.dumps(results, indent=2, default=str))
    print_report(results, args)


def print_report(results: dict[str, dict[str, list[dict[str, Any]]]], args: argparse.Namespace) -> None:
    """The table, the plot and the ratios, from every noise level's retrain summaries."""
    rows = [row for noise, summaries in results.items() for row in table_rows(float(noise), summaries)]
    plot(rows, args.out / "study.png")
    seeds = len(next(iter(next(iter(results.values())).values())))
    print(f"\n{args.num_samples} trials per search, {seeds} retrain seeds; plot: {args.out / 'study.png'}\n")
    print("| setting | test Recall@1 | test MAP@R | runs |")
    print("|---|---|---|---|")
    for label, values in rows:
        print(f"| {label} | {mean_std(values['test/recall@1'])} | {mean_std(values['test/map@r'])} "
              f"| {len(values['test/recall@1'])} |")
    for noise, summaries in results.items():
        lsd, base = (statistics.mean(s["test"]["test/recall@1"] for s in summaries[m]) for m in METHODS)
        print(f"ratio LSD/baseline test R@1 at {float(noise):.0%} noise: {lsd / base:.3f}")


if __name__ == "__main__":
    main()
