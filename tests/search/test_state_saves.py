"""tune_lsd/search/state_saves.py: Ray Tune's experiment-state manager forces a save once a
trial has made ``num_to_keep`` checkpoints since the last one (a canary on Ray's behaviour),
and no longer does in a driver that called ``save_state_on_period_only``."""

from __future__ import annotations

from ray.train._internal.storage import StorageContext
from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

from tune_lsd.search.state_saves import RAY_ON_TRIAL_CHECKPOINT, save_state_on_period_only


def manager(tmp_path) -> _ExperimentCheckpointManager:
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")
    return _ExperimentCheckpointManager(storage=storage, checkpoint_period=10, sync_every_n_trial_checkpoints=2)


def test_ray_forces_a_save_after_two_checkpoints_of_a_trial(tmp_path):
    ray_own = manager(tmp_path)
    RAY_ON_TRIAL_CHECKPOINT(ray_own, "trial-a")
    assert not ray_own._should_force_sync_up
    RAY_ON_TRIAL_CHECKPOINT(ray_own, "trial-a")
    assert ray_own._should_force_sync_up, "Ray no longer forces a state save: tune_lsd/search/state_saves.py"


def test_a_driver_saving_on_the_period_only_is_never_forced(tmp_path, monkeypatch):
    monkeypatch.setattr(_ExperimentCheckpointManager, "on_trial_checkpoint", RAY_ON_TRIAL_CHECKPOINT)
    save_state_on_period_only()
    ours = manager(tmp_path)
    for _ in range(5):
        ours.on_trial_checkpoint("trial-a")
    assert not ours._should_force_sync_up
