"""How a search picks its trials and stops them: the Optuna searcher and the Tune scheduler.

``--searcher optuna`` (TPE), ``gp`` (Gaussian process) or ``random`` feed Ray's OptunaSearch; ``--scheduler asha``,
``pbt`` or ``fifo`` decide which trials go on. The two wrappers below make a search that was
killed at any instant resume to exactly ``num_samples`` trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna import Study
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining, TrialScheduler
from ray.tune.search import ConcurrencyLimiter, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from search_spaces.loader import SearchSpace
from tune_lsd.search.running import running_search
from tune_lsd.search.settings import SearchSettings

STUDY_NAME = "tune_lsd"


# Optuna's GP refits its model on every earlier trial for each suggestion, on the driver's
# thread: 0.16 s at 300 trials, 0.69 s at 1,000 (7 s for its first fit there) on a 2-core
# machine (benchmarks/searcher_cost.py), and cubic beyond. The trials after this many are
# sampled by TPE, which models every result the GP's trials gave.
GP_TRIALS = 1000


def optuna_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``--searcher``: TPE or a Gaussian process (each after its random
    start-up trials; the GP's trials after the first :data:`GP_TRIALS` by TPE), or random."""
    tpe = optuna.samplers.TPESampler(
        multivariate=True, group=True, seed=settings.seed, n_startup_trials=settings.tpe_startup_trials
    )
    if settings.searcher == "optuna":
        return tpe
    if settings.searcher == "gp":
        # The GP models the parameters every trial has; conditional ones (the EMA momentum, only
        # for the EMA teacher) are drawn at random, which docs/search-spaces.md says (no warning per trial).
        gp = optuna.samplers.GPSampler(
            seed=settings.seed, n_startup_trials=settings.tpe_startup_trials, warn_independent_sampling=False
        )
        return GPThenTPE(gp, tpe, GP_TRIALS)
    return optuna.samplers.RandomSampler(seed=settings.seed)


def gp_switch_line(settings: SearchSettings) -> str | None:
    """The line a GP search of more than :data:`GP_TRIALS` trials (earlier ones included) says."""
    if settings.searcher != "gp" or settings.earlier_trials + settings.num_samples <= GP_TRIALS:
        return None
    return (
        f"searcher gp: a Gaussian process takes over a second per suggestion past {GP_TRIALS} trials; "
        f"the trials after the {GP_TRIALS}th are sampled by TPE, from every result"
    )


class GPThenTPE(optuna.samplers.BaseSampler):
    """Optuna's GP sampler for the study's first ``gp_trials`` trials, then TPE (by trial
    number, so that each trial is sampled by one of them from start to end)."""

    def __init__(self, gp: optuna.samplers.BaseSampler, tpe: optuna.samplers.BaseSampler, gp_trials: int) -> None:
        self.gp, self.tpe, self.gp_trials = gp, tpe, gp_trials

    def _for(self, trial: FrozenTrial) -> optuna.samplers.BaseSampler:
        return self.gp if trial.number < self.gp_trials else self.tpe

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._for(trial).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._for(trial).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._for(trial).before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values: Sequence[float] | None) -> None:
        self._for(trial).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.gp.reseed_rng()
        self.tpe.reseed_rng()


def tune_config(
    settings: SearchSettings, space: SearchSpace, epochs: int, earlier: Sequence[tuple[dict[str, Any], float]] = ()
) -> tune.TuneConfig:
    """Searcher + scheduler + trial count of the search (PBT samples its own population);
    ``earlier``: (sampled values, result) of trials already run, which the searcher starts from."""
    search_alg = None
    if settings.scheduler != "pbt":
        searcher = ResumableOptunaSearch(
            space=space.optuna_space(),
            metric=settings.metric,
            mode=settings.mode,
            sampler=optuna_sampler(settings),
            study_name=STUDY_NAME,
            storage=study_with(space, settings.mode, earlier) if earlier else None,
        )
        search_alg = TrialCountedSearch(ConcurrencyLimiter(searcher, max_concurrent=settings.max_concurrent))
    scheduler: TrialScheduler
    if settings.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr="training_iteration",
            max_t=epochs,
            grace_period=settings.grace_period,
            reduction_factor=settings.reduction_factor,
        )
    elif settings.scheduler == "pbt":
        scheduler = PopulationBasedTraining(
            time_attr="training_iteration",
            perturbation_interval=settings.perturbation_interval,
            hyperparam_mutations=space.pbt_mutations(),
        )
    else:
        scheduler = FIFOScheduler()
    return tune.TuneConfig(
        metric=settings.metric,
        mode=settings.mode,
        search_alg=search_alg,
        scheduler=scheduler,
        num_samples=settings.num_samples,
        # (PBT's generator takes the limit; the searcher's is in its ConcurrencyLimiter)
        max_concurrent_trials=settings.max_concurrent if search_alg is None else None,
        time_budget_s=settings.time_budget_s,
        # A finished trial's actor takes the next trial (and a PBT exploit
        # continues in its own actor): no process start, imports or CUDA context
        # per trial. reset_config rebuilds everything and refuses the actor when
        # the previous trial's GPU memory was not released.
        reuse_actors=True,
    )


def study_with(
    space: SearchSpace, mode: str, earlier: Sequence[tuple[dict[str, Any], float]]
) -> optuna.storages.BaseStorage:
    """An in-memory Optuna storage whose study already holds ``earlier`` as completed trials:
    the searcher (which loads the study by its name) models them from its first suggestion."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(
        storage=storage, study_name=STUDY_NAME, direction="maximize" if mode == "max" else "minimize"
    )
    for sampled, value in earlier:
        try:
            study.add_trial(
                optuna.trial.create_trial(
                    params=sampled,
                    value=value,
                    distributions={key: space.params[key].optuna_distribution() for key in sampled},
                )
            )
        except (KeyError, ValueError):  # the space changed since: a value outside it cannot inform it
            continue
    return storage


class TrialCountedSearch(SearchGenerator):
    """Ray's SearchGenerator, whose count of the trials it created follows Tune's trial list.

    Tune saves its trial list, then the searcher's state. A driver killed between the two
    restores a count that disagrees with the list, and the resumed search ends a trial short
    or long. :class:`~tune_lsd.search.callbacks.TrialCountCallback` hands over the list's
    length at the start of every controller step (before Tune asks for new trials), so a
    search ends with ``num_samples`` trials whatever the instant it was killed.

    On ``--resume`` Ray also restores the experiment it saved when the search started, and
    creates the trials still to come in that run's storage path (a folder that may no longer
    exist where the search resumes): :meth:`set_state` moves them to the running search's.
    """

    def follow(self, trials_in_tune: int) -> None:
        self._counter = trials_in_tune  # Ray's count of created trials (no public setter)

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        # New trials take their storage from the restored experiment's spec (Ray has no public way
        # to change it): moved to the running search's path as Ray moves the restored trials'
        # (TuneController._restore_trials), keeping the rest (its timestamp names the driver's
        # staging folder, which the controller takes over from the restored trials).
        import copy

        from ray.train._internal.storage import get_fs_and_path

        experiment = self._experiment
        if experiment is None:  # saved before any trial was created: nothing to move
            return
        moved = copy.copy(experiment.spec["storage"])
        moved.storage_filesystem, fs_path = get_fs_and_path(running_search().storage_path, None)
        moved.storage_fs_path = Path(fs_path).as_posix()
        experiment.spec["storage"] = moved


class ResumableOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, tolerant of trials it does not know after ``--resume``.

    A driver killed between Tune writing its trial list and the searcher's state can come back
    with an in-flight trial that the restored searcher never suggested; Ray's OptunaSearch then
    raises KeyError on that trial's first result and the whole search stops. Such a trial still
    trains to the end; its result just does not inform the sampler.
    """

    def _knows(self, trial_id: str) -> bool:
        return trial_id in self._ot_trials or trial_id in self._completed_trials

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if self._knows(trial_id):
            super().on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if self._knows(trial_id):
            super().on_trial_complete(trial_id, result, error)
