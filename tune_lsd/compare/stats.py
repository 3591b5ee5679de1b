"""Paired differences between two spaces' retrained winners, with 95 % intervals and a verdict.

Retrain ``r`` of search seed ``k`` on one side is paired with the same ``(k, r)`` on the other:
the same retrain seed, the same search seed. Two levels of evidence:

- **over retrain seeds**: every pair's difference (S x R values): how sure the difference is
  for the configurations these searches found;
- **over search seeds**: each search pair's mean difference over its retrains (S values):
  the search's own variance included, which is what "does A help on my data?" asks.

Each gets a percentile bootstrap interval (the pairs resampled together) and a Student-t
interval (the check on the bootstrap, too narrow with few pairs). The verdict rests on the
search-seed level when there are at least two search seeds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import scipy.stats

CONFIDENCE = 0.95
RESAMPLES = 10_000


@dataclass
class Difference:
    """The mean of paired differences ``a - b`` and its two 95 % intervals (None with one pair)."""

    metric: str
    level: str  # "retrain seeds" or "search seeds"
    values: list[float]
    mean: float
    bootstrap: tuple[float, float] | None
    student_t: tuple[float, float] | None

    def to_dict(self) -> dict:
        return asdict(self)


def bootstrap_interval(values: list[float], seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``RESAMPLES`` resamples, seeded)."""
    array = np.asarray(values, dtype=float)
    if np.ptp(array) == 0:  # every resample has the same mean
        return float(array[0]), float(array[0])
    result = scipy.stats.bootstrap(
        (array,),
        np.mean,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def t_interval(values: list[float]) -> tuple[float, float]:
    """Student-t interval of the mean."""
    array = np.asarray(values, dtype=float)
    if np.ptp(array) == 0:
        return float(array[0]), float(array[0])
    interval = scipy.stats.ttest_1samp(array, 0.0).confidence_interval(CONFIDENCE)
    return float(interval.low), float(interval.high)


def difference(metric: str, level: str, values: list[float]) -> Difference:
    many = len(values) >= 2
    return Difference(
        metric,
        level,
        [float(v) for v in values],
        float(np.mean(values)),
        bootstrap_interval(values) if many else None,
        t_interval(values) if many else None,
    )


def paired_differences(results: list[dict], a: str, b: str, metric: str) -> list[Difference]:
    """The differences ``a - b`` of ``metric`` at both levels, from the retrain results
    (dicts with ``space``, ``search_seed``, ``seed`` and ``metrics``); only complete pairs count."""
    by_key = {(r["space"], r["search_seed"], r["seed"]): r["metrics"][metric] for r in results}
    pairs = sorted((k, s) for space, k, s in by_key if space == a and (b, k, s) in by_key)
    per_pair = [by_key[(a, k, s)] - by_key[(b, k, s)] for k, s in pairs]
    search_seeds = sorted({k for k, _ in pairs})
    per_search = [float(np.mean([d for (k, _), d in zip(pairs, per_pair) if k == seed])) for seed in search_seeds]
    return [difference(metric, "retrain seeds", per_pair), difference(metric, "search seeds", per_search)]


def verdict(differences: list[Difference], a: str, b: str) -> str:
    """One line: which side wins on the first metric, on the evidence that counts most."""
    chosen = next((d for d in differences if d.level == "search seeds" and d.student_t is not None), None)
    chosen = chosen or next((d for d in differences if d.student_t is not None), None)
    if chosen is None or chosen.bootstrap is None or chosen.student_t is None:
        return f"verdict: not enough pairs for an interval ({a} - {b}: one pair); use more --seeds or --search-seeds"
    above = chosen.bootstrap[0] > 0 and chosen.student_t[0] > 0  # both intervals must agree
    below = chosen.bootstrap[1] < 0 and chosen.student_t[1] < 0
    outcome = (
        f"{a} beats {b}" if above else f"{a} loses to {b}" if below else f"no clear difference between {a} and {b}"
    )
    return (
        f"verdict: {outcome} on {chosen.metric} ({a} - {b} = {chosen.mean:+.4f}; 95 % intervals over "
        f"{len(chosen.values)} {chosen.level}: bootstrap [{chosen.bootstrap[0]:+.4f}, {chosen.bootstrap[1]:+.4f}], "
        f"t [{chosen.student_t[0]:+.4f}, {chosen.student_t[1]:+.4f}])"
    )
