"""search_spaces/loader.py: shipped spaces validate, conditions hold, bad spaces name the key."""

from __future__ import annotations

import optuna
import pytest
import yaml

from search_spaces.loader import SearchSpaceError, available_spaces, load_space
from trainables.dml import trial_config

PRESETS = ["cub", "cars", "sop", "inshop"]


@pytest.mark.parametrize("name", ["lsd", "baseline", "lsd_pbt", "lsd_pretrained", "baseline_pretrained", *PRESETS])
def test_shipped_spaces_load_and_produce_valid_trial_configs(name):
    assert name in available_spaces()
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        trial = study.ask()
        space.optuna_space()(trial)
        config = trial_config(space.base_config().to_dict(), trial.params)
        for key, value in trial.params.items():
            assert config.flat()[key] == value
        study.tell(trial, 0.0)


def test_conditional_parameter_is_only_sampled_when_its_condition_holds():
    space = load_space("lsd")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        space.optuna_space()(trial)
        teacher = trial.params["lsd.teacher"]
        seen.add(teacher)
        assert ("lsd.ema_momentum" in trial.params) == (teacher == "ema")
        study.tell(trial, 0.0)
    assert seen == {"ema", "epoch"}


def test_tune_param_space_samples_none_for_a_false_condition():
    from ray.tune.search.variant_generator import generate_variants

    space = load_space("lsd")
    teachers = set()
    for _ in range(20):
        for _, variant in generate_variants(space.tune_param_space()):
            teachers.add(variant["lsd.teacher"])
            assert (variant["lsd.ema_momentum"] is None) == (variant["lsd.teacher"] == "epoch")
    assert teachers == {"ema", "epoch"}
    assert set(load_space("lsd_pbt").pbt_mutations()) == {"optim.lr", "lsd.weight", "lsd.temperature"}


def write_space(tmp_path, params, **extra):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"base": "glyphs_search", "params": params, **extra}))
    return str(path)


@pytest.mark.parametrize(
    "params, extra, message",
    [
        ({"lsd.temprature": {"type": "uniform", "low": 0.1, "high": 1}}, {}, "lsd.temprature: unknown config key"),
        ({"optim.lr": {"type": "loguniform", "low": 0.1, "high": 0.01}}, {}, "optim.lr: low (0.1) must be below high"),
        (
            {"lsd.ema_momentum": {"type": "uniform", "low": 0.8, "high": 0.9, "when": {"lsd.mentor": "ema"}}},
            {},
            "condition on 'lsd.mentor'",
        ),
        ({"lsd.ema_momentum": {"type": "uniform", "low": 0.8, "high": 1.5}}, {}, "value 1.5 rejected"),
        ({"lsd.teacher": {"type": "choice", "values": []}}, {}, "non-empty"),
        ({"optim.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}, {"fixed": {"optim.lrr": 1}}, "optim.lrr"),
        ({"optim.lr": {"type": "gaussian", "low": 0.1, "high": 0.2}}, {}, "params.optim.lr.type"),
    ],
)
def test_bad_spaces_fail_naming_the_key(tmp_path, params, extra, message):
    with pytest.raises(SearchSpaceError) as error:
        load_space(write_space(tmp_path, params, **extra))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_unknown_space_name():
    with pytest.raises(SearchSpaceError, match="neither a file nor one of"):
        load_space("no_such_space")


@pytest.mark.parametrize("name", ["lsd", "baseline", "lsd_pbt", "lsd_pretrained"])
def test_optuna_distribution_is_what_define_by_run_suggests(name):
    space = load_space(name)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        space.optuna_space()(trial)
        assert trial.distributions == {k: space.params[k].optuna_distribution() for k in trial.params}
        study.tell(trial, 0.0)


@pytest.mark.parametrize("name", PRESETS)
def test_paper_presets_train_and_test_on_a_fake_tree(name, tmp_path):
    """Each dataset preset, as shipped but with a tiny backbone and batch, on a fake tree in
    the dataset's real format: one epoch, then the test metrics at the preset's ks."""
    from fake_datasets import write_fake_dataset

    from search_spaces import CONFIG_DIR
    from tune_lsd.config import Config
    from tune_lsd.engine import Trainer

    preset = Config.load(CONFIG_DIR / f"{name}.yaml")
    assert (
        preset.model.backbone,
        preset.model.freeze_bn,
        preset.data.batch_size,
        preset.data.samples_per_class,
        preset.data.image_size,
        preset.data.load_size,
    ) == ("resnet50", True, 112, 2, 224, 256)
    assert preset.lsd.temperature == 1.0 and preset.optim.lr == 1e-5 and preset.data.eval_crop == 0.875
    write_fake_dataset(name, tmp_path, classes=20, per_class=3)
    config = Config.load(
        CONFIG_DIR / f"{name}.yaml",
        [
            f"data.root={tmp_path}",
            "model.backbone=resnet10t",
            "model.pretrained=none",
            "data.image_size=16",
            "data.load_size=20",
            "data.batch_size=8",
            "schedule.epochs=1",
            "schedule.steps_per_epoch=2",
            "eval.batch_size=16",
            "runtime.progress=false",
        ],
    )
    trainer = Trainer(config)
    metrics = trainer.run_epoch()
    assert trainer.splits.train.num_classes == 8 and trainer.splits.val.num_classes == 2
    assert {f"val/recall@{k}" for k in preset.eval.ks} <= metrics.keys()
    test = trainer.evaluate("test")
    assert 0.0 <= test["test/recall@1"] <= 1.0 and test["test/map@r"] > 0
    assert (trainer.splits.test.is_query is not None) == (name == "inshop")
