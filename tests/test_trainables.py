"""trainables/dml.py: the trainable outside a Tuner — steps, checkpoints, actor reuse, PBT's lr."""

from __future__ import annotations

import pytest
import torch
from conftest import quick_config

from trainables.dml import DMLTrainable
from tune_lsd.engine import Trainer


@pytest.fixture
def base_config():
    return quick_config(**{"schedule.epochs": 3}).to_dict()


def make(config: dict, base: dict, **parameters) -> DMLTrainable:
    """The trainable as `tune.with_parameters` delivers it: setup(config) with the base injected."""

    class WithBase(DMLTrainable):
        def setup(self, config):
            super().setup(config, base_config=base, **parameters)

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


def test_a_finished_trial_restored_after_a_driver_crash_reports_its_result_without_training(base_config, tmp_path):
    trial = make({"lsd.weight": 5.0}, base_config, finished_dir=str(tmp_path))
    results = [trial.step() for _ in range(3)]
    trial.stop()
    assert [p.name for p in tmp_path.iterdir()] == [f"{trial.trial_id}.json"]  # written at the last epoch only
    # Ray restores the trial as still running (its state was saved before its last result).
    restored = make({"lsd.weight": 5.0}, base_config, finished_dir=str(tmp_path))
    assert restored.trainer is None  # nothing built
    restored.load_checkpoint(str(tmp_path / "unused"))
    replayed = restored.step()
    assert replayed["done"] and replayed["replayed"] and replayed["epoch"] == 3
    assert replayed["val/recall@1"] == results[-1]["val/recall@1"]
    assert restored.reset_config({"lsd.weight": 1.0})  # its actor takes the next trial as usual
    restored.stop()


def test_with_mlflow_ray_gets_only_what_it_reads_and_mlflow_every_metric(base_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from trainables.dml import RAY_RESULT_KEYS
    from tune_lsd import tracking

    context = tracking.start_search_run(tracking.default_tracking_uri(tmp_path), "lean", {}, tmp_path / "artifacts")
    trial = make({"lsd.weight": 5.0}, base_config, tracking=context)
    result = trial.step()
    timings = {"time/process_start_s", "time/import_s", "time/trainer_s", "time/setup_s"}
    assert set(result) == {"val/recall@1", "best/val/recall@1", *RAY_RESULT_KEYS, *timings}
    assert trial.tracker.flush() == 0
    logged = MlflowClient(context.tracking_uri).get_run(trial.tracker.run_id).data.metrics
    assert {"val/map_at_r", "val/recall_at_8", "lsd/weight", "train/base_loss", "train/lr"} <= set(logged)
    assert logged["val/recall_at_1"] == result["val/recall@1"]
    trial.stop()


def test_the_best_model_is_handed_to_mlflow_before_the_trial_counts_as_finished(base_config, tmp_path):
    """A driver killed just after a trial's last epoch takes the trial's process with it, and
    the resumed search only replays the finished result: the best model must be in the
    trial's spool (delivered from there) by the time its finished record is written."""
    from mlflow.tracking import MlflowClient

    from tune_lsd import tracking

    context = tracking.start_search_run(tracking.default_tracking_uri(tmp_path), "last", {}, tmp_path / "artifacts")
    trial = make({"lsd.weight": 5.0}, base_config, tracking=context, finished_dir=str(tmp_path / "finished"))
    assert [trial.step()["done"] for _ in range(3)] == [False, False, True]
    assert (tmp_path / "finished" / f"{trial.trial_id}.json").is_file()
    assert trial.tracker.flush() == 0  # (delivers what the spool holds; the trial has not ended)
    run_id, client = trial.tracker.run_id, MlflowClient(context.tracking_uri)
    assert [a.path for a in client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)] == ["checkpoint/model.pt"]
    trial.stop()  # and not uploaded again when it ends
    assert [a.path for a in client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)] == ["checkpoint/model.pt"]


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


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def test_process_memory_does_not_grow_over_reused_trials(base_config):
    trainable = make({"optim.lr": 1e-3}, base_config)
    memory = []
    for trial in range(6):
        trainable.step()
        trainable.step()
        assert trainable.reset_config({"optim.lr": 1e-3 * (trial + 2), "lsd.teacher": ["ema", "epoch"][trial % 2]})
        memory.append(rss_mb())
    trainable.stop()
    # The first trials warm up allocators and caches; after that a leak of one trial's
    # model, teacher and optimiser (several MB each) would add up.
    assert memory[-1] - memory[1] < 20, memory


def test_pbt_exploit_in_place_keeps_the_trials_mlflow_run(base_config, tmp_path):
    from mlflow.tracking import MlflowClient

    from tune_lsd import tracking

    context = tracking.start_search_run(tracking.default_tracking_uri(tmp_path), "inplace", {}, tmp_path / "artifacts")

    class Tracked(DMLTrainable):
        def setup(self, config):
            super().setup(config, base_config=base_config, tracking=context)

    donor = make({"optim.lr": 1e-3}, base_config)
    donor.step()
    donor.save_checkpoint(str(tmp_path))
    trial = Tracked(config={"optim.lr": 2e-3})
    trial.step()
    assert trial.tracker.flush() == 0
    tracker, run_id = trial.tracker, trial.tracker.run_id
    # What Ray does at an exploit with reuse_actors: reset to the mutated config, then restore the donor.
    assert trial.reset_config({"optim.lr": 4e-3})
    trial.load_checkpoint(str(tmp_path))
    assert trial.tracker is tracker and trial.tracker.run_id == run_id
    assert trial.trainer.epoch == 1 and trial.run_config.optim.lr == 4e-3
    client = MlflowClient(context.tracking_uri)
    trial.tracker.flush()
    assert client.list_artifacts(run_id, tracking.CHECKPOINT_DIR) == []  # the trial goes on: nothing uploaded yet
    trial.step()
    trial.stop()
    assert [a.path for a in client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)] == ["checkpoint/model.pt"]
    assert [m.step for m in client.get_metric_history(run_id, "val/recall_at_1")] == [1, 2]


def test_checkpoint_holds_the_best_weights_once(base_config, tmp_path):
    trainable = make({"optim.lr": 1e-3}, base_config)
    trainable.step()
    epoch_1 = {k: v.clone() for k, v in trainable.trainer.model.state_dict().items()}
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    trainable.save_checkpoint(str(tmp_path / "a"))  # the best epoch is the current one: stored once
    state_bytes = (tmp_path / "a" / "trainer.pt").stat().st_size
    assert (tmp_path / "a" / "best.pt").stat().st_size < 2048 < state_bytes
    restored = make({"optim.lr": 1e-3}, base_config)
    restored.load_checkpoint(str(tmp_path / "a"))
    assert restored.best_model["epoch"] == 1 and restored.best_value == trainable.best_value
    for name, value in epoch_1.items():
        assert torch.equal(restored.best_model["student"][name], value), name

    trainable.best_value = float("inf")  # epoch 2 will not be the best: epoch 1's weights must be kept
    trainable.step()
    trainable.save_checkpoint(str(tmp_path / "b"))
    restored.load_checkpoint(str(tmp_path / "b"))
    assert restored.trainer.epoch == 2 and restored.best_model["epoch"] == 1
    assert len(restored.best_model["history"]) == 1
    for name, value in epoch_1.items():
        assert torch.equal(restored.best_model["student"][name], value), name
    assert not all(torch.equal(restored.trainer.model.state_dict()[n], v) for n, v in epoch_1.items())


def test_training_goes_on_while_checkpoints_cannot_be_uploaded_until_the_patience_ends(  # (and trainables/uploads.py)
    base_config, tmp_path, monkeypatch, capsys
):
    """Ray's upload of a checkpoint fails as when the object store is down: the trial gets a
    result without a checkpoint (one line says so) and trains on; the next upload tries again;
    only uploads failing for longer than the storage's patience fail the trial, in one line."""
    from ray.tune import Trainable

    from tune_lsd.storage import Location, StorageError

    uploads = {"fail": "AWS Error NETWORK_CONNECTION during PutObject operation: Could not connect to server"}
    ray_save = Trainable.save

    def upload(self, checkpoint_dir=None):
        if uploads["fail"]:
            raise OSError(uploads["fail"])
        return ray_save(self, checkpoint_dir)

    monkeypatch.setattr(Trainable, "save", upload)
    trial = make({"lsd.weight": 5.0}, base_config, storage=Location(tmp_path / "store", patience_s=30))
    trial.step()
    assert trial.save().checkpoint is None
    assert trial.step()["epoch"] == 2  # trained on
    assert trial.save().checkpoint is None
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"trial {trial.trial_id}")]
    assert len(lines) == 1 and "after epoch 1 could not be uploaded" in lines[0] and "training goes on" in lines[0]

    trial.uploads.failing_since -= 31  # the first failure was longer ago than the patience
    with pytest.raises(StorageError, match=f"did not take a checkpoint of trial {trial.trial_id} for 3\\d s"):
        trial.save()
    uploads["fail"] = ""
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    assert trial.save(str(folder)).checkpoint is not None  # (outside a Tuner: the folder itself)
    assert "checkpoints reach the storage again after" in capsys.readouterr().out
    assert trial.uploads.failing_since is None
    uploads["fail"] = "Access Denied"  # not an outage: at once
    with pytest.raises(OSError, match="Access Denied"):
        trial.save(str(folder))
    trial.stop()
