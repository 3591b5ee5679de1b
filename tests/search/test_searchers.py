"""tune_lsd/search/searchers.py: the TPE sampler's start-up trials and the resumable searcher."""

from __future__ import annotations

import pytest


def test_restored_searcher_tolerates_a_trial_it_never_suggested():
    """After a driver kill, Tune may restore an in-flight trial the saved searcher does not know."""
    from search_spaces.loader import load_space
    from tune_lsd.search import ResumableOptunaSearch

    searcher = ResumableOptunaSearch(space=load_space("lsd").optuna_space(), metric="val/recall@1", mode="max")
    suggested = searcher.suggest("known")
    assert suggested["lsd.teacher"] in ("ema", "epoch") and 1e-5 < suggested["optim.lr"] < 1  # a real suggestion
    searcher.on_trial_result("stranger", {"val/recall@1": 0.5, "training_iteration": 1})  # no KeyError
    searcher.on_trial_complete("stranger", {"val/recall@1": 0.5})
    searcher.on_trial_result("known", {"val/recall@1": 0.7, "training_iteration": 1})
    searcher.on_trial_complete("known", {"val/recall@1": 0.7})
    assert [t.value for t in searcher._ot_study.trials] == [0.7]  # only the trial it suggested informs TPE


@pytest.mark.parametrize(
    "num_samples, startup_trials, expected", [(8, None, 3), (16, None, 4), (100, None, 10), (8, 0, 0), (8, 5, 5)]
)
def test_tpe_starts_using_its_model_after_the_startup_trials(num_samples, startup_trials, expected):
    """Optuna's default of 10 random start-up trials would make an 8-trial search pure random."""
    import optuna

    from search_spaces.loader import load_space
    from tune_lsd.search import SearchSettings, tune_config

    settings = SearchSettings(name="x", num_samples=num_samples, startup_trials=startup_trials)
    sampler = tune_config(settings, load_space("lsd"), epochs=3).search_alg.searcher.searcher._sampler
    assert isinstance(sampler, optuna.samplers.TPESampler) and sampler._n_startup_trials == expected


def searcher_scheduler_pairs():
    from typing import get_args

    from tune_lsd.search.settings import SchedulerName, SearcherName

    return [(searcher, scheduler) for searcher in get_args(SearcherName) for scheduler in get_args(SchedulerName)]


@pytest.mark.parametrize("searcher, scheduler", searcher_scheduler_pairs())
def test_every_searcher_and_scheduler_pair_builds_a_tune_config_or_is_refused_in_one_line(searcher, scheduler):
    """PBT samples its own population (random starts, then mutations): it takes no Optuna searcher."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, PopulationBasedTraining

    from tune_lsd.search import SearchError, SearchSettings, prepare_space, tune_config

    settings = SearchSettings(
        name="pair",
        space="lsd_pbt" if scheduler == "pbt" else "lsd",
        searcher=searcher,
        scheduler=scheduler,
        num_samples=4,
        max_concurrent=2,
    )
    if scheduler == "pbt" and searcher != "random":
        with pytest.raises(SearchError, match="^the pbt scheduler samples its own population"):
            prepare_space(settings)
        return
    space = prepare_space(settings)
    config = tune_config(settings, space, epochs=3)
    expected = {"asha": ASHAScheduler, "pbt": PopulationBasedTraining, "fifo": FIFOScheduler}[scheduler]
    assert isinstance(config.scheduler, expected) and config.num_samples == 4
    if scheduler == "pbt":  # Tune's own generator, limited by the Tuner
        assert config.search_alg is None and config.max_concurrent_trials == 2
        return
    limiter = config.search_alg.searcher
    assert limiter.max_concurrent == 2 and config.max_concurrent_trials is None
    sampler = limiter.searcher._sampler
    assert type(sampler).__name__ == {"optuna": "TPESampler", "gp": "GPThenTPE", "random": "RandomSampler"}[searcher]
    suggested = config.search_alg.searcher.searcher.suggest("t1")  # a first trial from the space
    assert set(suggested) <= set(space.params) and "lsd.weight" in suggested


def test_the_gp_models_every_unconditional_parameter_and_draws_the_conditional_one_at_random():
    """After its start-up trials, Optuna's GP proposes the parameters all trials share (the
    categorical teacher included) from its model; the EMA momentum exists only for the EMA
    teacher, so it is drawn independently."""
    from search_spaces.loader import load_space
    from tune_lsd.search import SearchSettings, tune_config

    space = load_space("lsd")
    settings = SearchSettings(name="gp", searcher="gp", num_samples=12, max_concurrent=1, startup_trials=4)
    searcher = tune_config(settings, space, epochs=3).search_alg.searcher.searcher
    for index in range(5):
        suggested = searcher.suggest(f"t{index}")
        searcher.on_trial_complete(f"t{index}", {"val/recall@1": 0.5 + 0.01 * index, **suggested})
    study, sampler = searcher._ot_study, searcher._sampler
    trial = study.ask()

    modelled = sampler.infer_relative_search_space(study, trial)

    assert sampler.gp._n_startup_trials == 4 and len(study.trials) == 6
    assert set(modelled) == set(space.params) - {"lsd.ema_momentum"}


def test_the_gp_samples_the_first_trials_and_tpe_the_others_from_every_result():
    import optuna

    from tune_lsd.search.searchers import GPThenTPE

    gp = optuna.samplers.GPSampler(seed=0, n_startup_trials=2)
    tpe = optuna.samplers.TPESampler(seed=0, n_startup_trials=2, multivariate=True)
    study = optuna.create_study(sampler=GPThenTPE(gp, tpe, gp_trials=4), direction="maximize")
    study.optimize(lambda t: -((t.suggest_float("x", -1, 1) - 0.3) ** 2), n_trials=8)

    sampler = study.sampler
    assert [sampler._for(t) is gp for t in study.trials] == [True] * 4 + [False] * 4
    assert all(-1 <= t.params["x"] <= 1 for t in study.trials) and len(study.trials) == 8
    # The fifth trial is TPE's from the GP's four results: what TPE alone suggests after them.
    alone = optuna.create_study(
        sampler=optuna.samplers.TPESampler(seed=0, n_startup_trials=2, multivariate=True), direction="maximize"
    )
    for done in study.trials[:4]:
        alone.add_trial(done)
    alone.optimize(lambda t: -((t.suggest_float("x", -1, 1) - 0.3) ** 2), n_trials=1)
    assert alone.trials[4].params == study.trials[4].params


@pytest.mark.parametrize(("searcher", "trials", "earlier", "says"), [
    ("gp", 1000, 0, False), ("gp", 1001, 0, True), ("gp", 100, 950, True), ("optuna", 5000, 0, False),
])  # fmt: skip
def test_a_gp_search_past_its_limit_says_that_tpe_takes_over(searcher, trials, earlier, says):
    from tune_lsd.search import SearchSettings
    from tune_lsd.search.searchers import gp_switch_line

    settings = SearchSettings(name="s", searcher=searcher, num_samples=trials, earlier_trials=earlier)
    line = gp_switch_line(settings)
    assert (line is not None) == says
    if says:
        assert line.startswith("searcher gp:") and "after the 1000th are sampled by TPE" in line


def test_a_searcher_given_earlier_results_models_them_from_its_first_suggestion():
    """--extend: the earlier trials are completed trials of the searcher's study, so TPE's
    start-up phase is over and it suggests from its model at once."""
    from search_spaces.loader import load_space
    from tune_lsd.search import SearchSettings, tune_config

    space = load_space("lsd")
    earlier = [
        (
            {
                "optim.lr": 1e-3 * (1 + 0.5 * i),
                "optim.weight_decay": 1e-5,
                "lsd.weight": 10.0 + i,
                "lsd.temperature": 0.5,
                "lsd.teacher": "epoch",
            },
            0.5 + 0.1 * i,
        )
        for i in range(4)
    ]
    settings = SearchSettings(name="more", num_samples=2, startup_trials=3)
    outside = ({**earlier[0][0], "optim.lr": 0.5}, 0.99)  # from a space that has changed since: left out
    searcher = tune_config(settings, space, epochs=3, earlier=[*earlier, outside]).search_alg.searcher.searcher

    suggested = searcher.suggest("t1")

    study = searcher._ot_study
    assert [t.value for t in study.trials[:4]] == [0.5, 0.6, 0.7, 0.8]
    assert [t.params for t in study.trials[:4]] == [params for params, _ in earlier]
    assert len(study.trials) == 5 and suggested not in [params for params, _ in earlier]
    assert searcher._sampler._n_startup_trials == 3 < 4  # the model is used from this first suggestion
