"""trainables/dml.py: the trainable outside a Tuner — steps, checkpoints, actor reuse, PBT's lr."""

from __future__ import annotations

import pytest
import torch

from tune_lsd.engine import Trainer
from trainables.dml import DMLTrainable
from conftest import quick_config


@pytest.fixture
def base_config():
    return quick_config(**{"schedule.epochs": 3}).to_dict()


def make(config: dict, base: dict) -> DMLTrainable:
    """The trainable as `tune.with_parameters` delivers it: setup(config) with the base injected."""

    class WithBase(DMLTrainable):
        def setup(self, config):
            super().setup(config, base_config=base)

    return WithBase(config=config)


def test_step_reports_metrics_and_done_at_the_last_epoch(base_config):
    trainable = make({"lsd.weight": 5.0}, base_config)
    results = [trainable.step() for _ in range(3)]
    assert [r["epoch"] for r in results] == [1, 2, 3]
    assert [r["done"] for r in results] == [False, False, True]
    assert {"val/recall@1", "val/map@r", "train/loss", "lsd/weight", "best/val/recall@1"} <= set(results[-1])
    assert results[-1]["best/val/recall@1"] == max(r["val/recall@1"] for r in results)
    assert trainable.run_config.lsd.weight == 5.0
    trainable.stop()


def test_reset_config_rebuilds_everything(base_config):
    reused = make({"optim.lr": 1e-3}, base_config)
    reused.step()
    assert reused.reset_config({"optim.lr": 3e-4, "lsd.teacher": "epoch"})
    fresh = Trainer(reused.run_config)
    assert reused.trainer.epoch == 0 and reused.trainer.history == [] and reused.best_model is None
    assert reused.trainer.optimizer.param_groups[0]["lr"] == 3e-4
    for name, value in fresh.model.state_dict().items():
        assert torch.equal(reused.trainer.model.state_dict()[name], value), name
    assert type(reused.trainer.teacher).__name__ == "EpochTeacher"
    reused.stop()


def test_checkpoint_round_trip_keeps_the_new_configs_lr(base_config, tmp_path):
    donor = make({"optim.lr": 1e-3}, base_config)
    donor.step()
    donor.save_checkpoint(str(tmp_path))
    mutated = make({"optim.lr": 2e-3}, base_config)  # PBT: exploit the donor, explore a new lr
    mutated.load_checkpoint(str(tmp_path))
    assert mutated.trainer.epoch == 1 and mutated.best_value == donor.best_value
    for name, value in donor.trainer.model.state_dict().items():
        assert torch.equal(mutated.trainer.model.state_dict()[name], value), name
    factor = mutated.trainer._lr_factor(mutated.trainer.scheduler.last_epoch)
    assert mutated.trainer.optimizer.param_groups[0]["lr"] == pytest.approx(2e-3 * factor)
    assert mutated.step()["epoch"] == 2
