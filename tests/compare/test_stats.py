"""tune_lsd/compare/stats.py: pairing, the two levels, the intervals against a computation by
hand, and the verdict."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from tune_lsd.compare.stats import bootstrap_interval, paired_differences, t_interval, verdict


def results(values: dict[tuple[str, int, int], float]) -> list[dict]:
    return [
        {"space": space, "search_seed": k, "seed": r, "metrics": {"test/recall@1": value}}
        for (space, k, r), value in values.items()
    ]


def test_pairs_match_search_seed_and_retrain_seed_and_incomplete_pairs_are_left_out():
    values = {
        ("a", 0, 0): 0.80,
        ("b", 0, 0): 0.70,
        ("a", 0, 1): 0.82,
        ("b", 0, 1): 0.78,
        ("a", 1, 0): 0.75,
        ("b", 1, 0): 0.77,
        ("a", 1, 1): 0.79,
        ("b", 1, 1): 0.74,
        ("a", 2, 0): 0.90,
    }  # no partner yet: not counted
    per_retrain, per_search = paired_differences(results(values), "a", "b", "test/recall@1")

    assert per_retrain.level == "retrain seeds" and per_search.level == "search seeds"
    assert per_retrain.values == pytest.approx([0.10, 0.04, -0.02, 0.05])
    assert per_search.values == pytest.approx([0.07, 0.015])
    assert per_retrain.mean == pytest.approx(0.0425) and per_search.mean == pytest.approx(0.0425)


def test_the_t_interval_is_the_textbook_one():
    values = [0.031, 0.012, 0.045, -0.004, 0.027]
    mean, sd, n = np.mean(values), np.std(values, ddof=1), len(values)
    half = scipy.stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)

    low, high = t_interval(values)

    assert (low, high) == pytest.approx((mean - half, mean + half), abs=1e-12)


def test_the_bootstrap_interval_matches_the_exact_bootstrap_distribution():
    """Against every one of the 4**4 equally likely resamples of 4 pairs, enumerated."""
    differences = [0.012, -0.004, 0.021, 0.007]
    means = np.sort([np.mean(sample) for sample in itertools.product(differences, repeat=len(differences))])

    low, high = bootstrap_interval(differences)

    assert np.quantile(means, 0.015) <= low <= np.quantile(means, 0.035)
    assert np.quantile(means, 0.965) <= high <= np.quantile(means, 0.985)
    assert bootstrap_interval([0.01, 0.01, 0.01]) == (0.01, 0.01)  # nothing varies: no spread


@pytest.mark.parametrize(
    "shift, outcome", [(0.05, "a beats b"), (-0.05, "a loses to b"), (0.0, "no clear difference between a and b")]
)
def test_the_verdict_reads_the_search_seed_level(shift, outcome):
    rng = np.random.default_rng(0)
    values = {}
    for k in range(4):
        for r in range(3):
            base = 0.7 + rng.normal(0, 0.01)
            values[("b", k, r)] = base
            values[("a", k, r)] = base + shift + rng.normal(0, 0.01) * (1 if shift else 3)
    differences = paired_differences(results(values), "a", "b", "test/recall@1")

    line = verdict(differences, "a", "b")

    assert line.startswith(f"verdict: {outcome} on test/recall@1") and "over 4 search seeds" in line


def test_one_pair_gives_no_interval_and_says_so():
    differences = paired_differences(results({("a", 0, 0): 0.8, ("b", 0, 0): 0.7}), "a", "b", "test/recall@1")

    assert all(d.bootstrap is None and d.student_t is None for d in differences)
    assert verdict(differences, "a", "b").startswith("verdict: not enough pairs")


def test_with_one_search_seed_the_verdict_uses_the_retrain_seeds():
    values = {(space, 0, r): 0.7 + (0.05 if space == "a" else 0) + 0.001 * r for space in "ab" for r in range(3)}
    line = verdict(paired_differences(results(values), "a", "b", "test/recall@1"), "a", "b")

    assert line.startswith("verdict: a beats b") and "over 3 retrain seeds" in line
