"""tune_lsd/config.py: YAML round trip, dotted overrides, one-line errors naming the key."""

from __future__ import annotations

import pytest

from tune_lsd.config import Config, ConfigError, allowed_keys, flatten


def test_yaml_round_trip_and_overrides(tmp_path):
    config = Config().with_overrides(["lsd.temperature=0.1", "loss.params.alpha=3", "eval.ks=[1, 4]"])
    path = tmp_path / "c.yaml"
    config.save(path)
    loaded = Config.load(path, ["schedule.epochs=3"])
    assert loaded.lsd.temperature == 0.1
    assert loaded.loss.params == {"alpha": 3}
    assert loaded.eval.ks == [1, 4]
    assert loaded.schedule.epochs == 3
    assert Config.load(path) == config


def test_flat_keys_are_all_schema_keys():
    flat = Config().flat()
    assert flat["lsd.ema_momentum"] == 0.95
    schema = set(allowed_keys())
    assert set(flat) - {"loss.params"} <= schema
    assert flatten({"a": {"b": 1, "c": {}}}) == {"a.b": 1, "a.c": {}}


@pytest.mark.parametrize(
    "override, named",
    [
        ("lsd.temprature=0.1", "lsd.temprature"),
        ("optimizer.lr=0.1", "optimizer"),
        ("data.batchsize=3", "data.batchsize"),
    ],
)
def test_unknown_keys_fail_with_one_line_naming_key_and_allowed(override, named):
    with pytest.raises(ConfigError) as error:
        Config().with_overrides([override])
    message = str(error.value)
    assert named in message and "allowed" in message and "\n" not in message


def test_typo_gets_a_suggestion():
    with pytest.raises(ConfigError, match="did you mean 'lsd.temperature'"):
        Config().with_overrides(["lsd.temprature=0.1"])


@pytest.mark.parametrize(
    "override, named",
    [
        ("lsd.temperature=-1", "lsd.temperature"),
        ("lsd.teacher=mean", "lsd.teacher"),
        ("data.label_noise=2", "data.label_noise"),
    ],
)
def test_bad_values_name_the_key(override, named):
    with pytest.raises(ConfigError, match=named):
        Config().with_overrides([override])


def test_missing_file_and_malformed_override(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        Config.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="form section.key=value"):
        Config().with_overrides(["lsd.weight"])
