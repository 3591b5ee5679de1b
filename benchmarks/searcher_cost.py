"""The searcher's time per suggestion against the number of trials it has seen.

Each searcher of `tune-lsd search` (TPE, the GP, random) is built as a search builds it, for
the `lsd` space, its study holding N finished trials (random values, random results); then a
few suggestions are timed (after one that is not), as the search driver makes them between two of Ray Tune's
controller steps. Optuna's GP refits on every earlier trial for each suggestion: this is what
sets ``GP_TRIALS`` (tune_lsd/search/searchers.py), past which a GP search's trials are TPE's.

    python benchmarks/searcher_cost.py [--trials 100 300 1000] [--suggestions 3]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings
from typing import Any

import optuna

from search_spaces.loader import load_space
from tune_lsd.search import SearchSettings, tune_config
from tune_lsd.search.searchers import GP_TRIALS, GPThenTPE


def earlier_trials(count: int, seed: int = 0) -> list[tuple[dict, float]]:
    """``count`` finished trials of the lsd space: values drawn in its ranges, a random result."""
    space, draw = load_space("lsd"), random.Random(seed)
    trials = []
    for _ in range(count):
        sampled = {}
        for name, spec in space.params.items():
            if name == "lsd.ema_momentum":
                continue  # conditional: not in every trial (the GP draws it at random)
            distribution = spec.optuna_distribution()
            if hasattr(distribution, "choices"):
                sampled[name] = draw.choice(distribution.choices)
            else:
                sampled[name] = draw.uniform(distribution.low, distribution.high)
        trials.append((sampled, draw.random()))
    return trials


def seconds_per_suggestion(searcher: str, seen: int, suggestions: int, gp_itself: bool) -> float:
    """Mean seconds of a suggestion by ``searcher`` after ``seen`` finished trials."""
    settings = SearchSettings(name="cost", searcher=searcher, num_samples=seen + suggestions)
    config = tune_config(settings, load_space("lsd"), epochs=1, earlier=earlier_trials(seen))
    optuna_search: Any = config.search_alg.searcher.searcher  # type: ignore[union-attr]  # (the counted limiter's)
    if gp_itself and isinstance(optuna_search._sampler, GPThenTPE):
        optuna_search._sampler.gp_trials = 10**9  # the GP at every size, to see where it stands
    optuna_search.suggest("warm-up")  # (the GP's first suggestion also imports and compiles its model code)
    started = time.perf_counter()
    for index in range(suggestions):
        optuna_search.suggest(f"t{index}")
    return (time.perf_counter() - started) / suggestions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--suggestions", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # TPE's group=True
    arms = [("optuna", False, "TPE"), ("gp", True, "GP alone"), ("gp", False, f"gp (TPE past {GP_TRIALS})")]
    arms.append(("random", False, "random"))
    print("| trials seen | " + " | ".join(label for *_, label in arms) + " |")
    print("|---" * (len(arms) + 1) + "|")
    for seen in args.trials:
        cells = [f"{seconds_per_suggestion(s, seen, args.suggestions, alone):.3f} s" for s, alone, _ in arms]
        print(f"| {seen} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
