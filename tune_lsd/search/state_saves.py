"""Ray Tune saves its experiment state on its period only, not also each time a trial has
registered ``num_to_keep`` checkpoints since the last save.

Ray forces that extra save (and first waits for the previous copy to the storage) so that its
saved state never names a checkpoint it has deleted since. With short epochs every running
trial gets there within seconds, so the whole state (every trial of the search, finished ones
included) is written and copied again and again: the driver's cost per trial grows with the
trials run. tune_lsd does not need the guarantee: a trial whose checkpoint the saved state
names is gone restores from its newest whole checkpoint instead (trainables/checkpoints.py),
and finished trials never restore (their results are recorded: trainables/finished.py).
"""

from __future__ import annotations

from typing import Any

from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

RAY_ON_TRIAL_CHECKPOINT = _ExperimentCheckpointManager.on_trial_checkpoint  # Ray's own (for its canary)


def _no_forced_save(manager: Any, trial: Any) -> None:
    """Ray's ``on_trial_checkpoint``, which counts a trial's checkpoints to force a save: nothing."""


def save_state_on_period_only() -> None:
    """In this process (the search's driver), Ray Tune saves its state on its period only."""
    _ExperimentCheckpointManager.on_trial_checkpoint = _no_forced_save  # type: ignore[method-assign,assignment]
