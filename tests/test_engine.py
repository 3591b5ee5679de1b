"""tune_lsd/engine.py: exact resume, real learning on glyphs, NaN detection."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from tune_lsd.data.sampler import class_balanced_batches
from tune_lsd.engine import NonFiniteLossError, Trainer, seed_everything
from tune_lsd.losses.lsd import lsd_weight


def assert_same_state(a: dict, b: dict) -> None:
    for name, value in a.items():
        assert torch.equal(value, b[name]), name


@pytest.mark.parametrize("teacher", ["ema", "epoch"])
def test_checkpoint_resumes_exactly(tmp_path, config_factory, teacher):
    config = config_factory(**{"lsd.teacher": teacher, "lsd.ramp": "constant", "schedule.epochs": 3})
    straight = Trainer(config)
    for _ in range(3):
        last = straight.run_epoch()

    first = Trainer(config)
    first.run_epoch()
    first.save(tmp_path / "ckpt.pt")
    del first
    resumed = Trainer.from_checkpoint(tmp_path / "ckpt.pt")
    assert resumed.epoch == 1 and len(resumed.history) == 1
    resumed.run_epoch()
    resumed_last = resumed.run_epoch()

    assert_same_state(straight.model.state_dict(), resumed.model.state_dict())
    assert_same_state(straight.teacher.module.state_dict(), resumed.teacher.module.state_dict())
    assert resumed_last["val/recall@1"] == last["val/recall@1"]
    assert resumed_last["train/loss"] == last["train/loss"]
    assert resumed_last["lsd/loss"] > 0


def test_short_training_on_glyphs_beats_the_untrained_model(config_factory):
    config = config_factory(
        **{
            "data.max_classes": 100,
            "schedule.epochs": 3,
            "schedule.steps_per_epoch": None,
            "data.batch_size": 128,
            "lsd.ema_momentum": 0.9,
        }
    )
    trainer = Trainer(config)
    untrained = trainer.evaluate("val")["val/recall@1"]
    history = [trainer.run_epoch() for _ in range(3)]
    trained = history[-1]["val/recall@1"]
    assert trained > untrained + 0.2, (untrained, trained)
    assert history[-1]["lsd/weight"] > 0 and history[-1]["lsd/loss"] > 0
    assert history[0]["train/images_per_s"] > 0


def per_step_means(trainer: Trainer) -> dict[str, float]:
    """Reference: the same epoch with every step's losses read on the host as it happens."""
    config = trainer.config
    seed_everything([config.seed, trainer.epoch])
    generator = torch.Generator().manual_seed(config.seed * 100_003 + trainer.epoch)
    train = trainer.splits.train
    batches = class_balanced_batches(
        train.labels, config.data.samples_per_class, config.data.batch_size, trainer.steps_per_epoch
    )
    weight = lsd_weight(config.lsd, trainer.epoch, config.schedule.epochs)
    trainer.model.train()
    losses = []
    for indices in batches:
        step = trainer._train_step(
            torch.from_numpy(train.images[indices]),
            torch.from_numpy(train.labels[indices]),
            generator,
            weight,
            need_teacher=trainer.teacher is not None and weight > 0,
        )
        losses.append([value.item() for value in step])
    assert trainer.teacher is not None
    trainer.teacher.after_epoch(trainer.model)
    trainer.epoch += 1
    means = np.mean(np.array(losses, dtype=np.float64), axis=0)
    return {"train/loss": means[0], "train/base_loss": means[1], "lsd/loss": means[2]}


@pytest.mark.parametrize("sync_every", [1, 3, 50])
def test_epoch_means_read_once_equal_per_step_reading(config_factory, sync_every):
    config = config_factory(**{"lsd.ramp": "constant", "schedule.steps_per_epoch": 7, "runtime.sync_every": sync_every})
    ours, reference = Trainer(config), Trainer(config)
    for _ in range(2):
        logged = ours.train_epoch()
        expected = per_step_means(reference)
        for name, value in expected.items():
            assert logged[name] == pytest.approx(value, rel=1e-12, abs=0), name
    assert logged["lsd/loss"] > 0


def test_non_finite_loss_stops_with_a_clear_error(config_factory):
    trainer = Trainer(
        config_factory(
            **{
                "optim.name": "sgd",
                "optim.lr": 1e30,
                "lsd.enabled": False,
                "loss.name": "normalized_softmax",
                "runtime.sync_every": 2,
            }
        )
    )
    with pytest.raises(NonFiniteLossError, match=r"training loss is (nan|inf) at epoch \d+ \(in steps \d+-\d+ of 4"):
        for _ in range(3):
            trainer.train_epoch()


def test_long_ema_horizon_warns(config_factory):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Trainer(config_factory(**{"lsd.ema_momentum": 0.999}))
    assert any("ema_momentum=0.999" in str(w.message) for w in caught)


def test_final_mode_has_no_validation(config_factory):
    trainer = Trainer(config_factory(**{"data.final": True}))
    metrics = trainer.run_epoch()
    assert not any(key.startswith("val/") for key in metrics)
    with pytest.raises(ValueError, match="no val split"):
        trainer.evaluate("val")
    assert "test/recall@1" in trainer.evaluate("test")
