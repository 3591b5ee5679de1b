"""Canaries: every private (or undocumented) API of Ray, Optuna, MLflow and torch that tune_lsd
relies on, checked for the attribute or behaviour it needs. An upgrade that renames or
changes one fails here, with the place in tune_lsd that needs a look, instead of silently in
a search. (torch's GPU-only calls are checked to exist; CI has no GPU to call them.)"""

from __future__ import annotations

import importlib
import inspect
import logging

import pytest


def test_ray_search_generator_counts_created_trials_in_counter():
    """tune_lsd/search/searchers.py TrialCountedSearch.follow assigns SearchGenerator._counter:
    Ray must read it to decide that the search has created all its trials, and save it."""
    from ray.tune.search import Searcher

    from tune_lsd.search.searchers import TrialCountedSearch

    class Nothing(Searcher):
        def suggest(self, trial_id):
            return {}

    generator = TrialCountedSearch(Nothing())
    generator._total_samples = 3  # what add_configurations sets from num_samples
    generator.follow(3)
    assert generator.is_finished(), "Ray's SearchGenerator no longer reads _counter in is_finished()"
    generator.follow(1)
    assert not generator.is_finished()
    assert generator.get_state()["counter"] == 1, "Ray's SearchGenerator no longer saves _counter"
    assert "experiment" in generator.get_state() and generator._experiment is None  # read by set_state


def test_ray_storage_context_and_its_filesystem_helper(tmp_path):
    """searchers.py TrialCountedSearch.set_state moves a restored experiment's
    spec["storage"] (a StorageContext) with ray.train._internal.storage.get_fs_and_path."""
    from ray.train._internal.storage import StorageContext, get_fs_and_path

    filesystem, path = get_fs_and_path(str(tmp_path), None)
    assert path == str(tmp_path) and filesystem.type_name == "local"
    storage = StorageContext(storage_path=str(tmp_path), experiment_dir_name="x")
    assert hasattr(storage, "storage_filesystem") and hasattr(storage, "storage_fs_path")


def test_ray_training_result_is_what_trainable_restore_takes():
    """trainables/checkpoints.py whole_result builds a _TrainingResult for an earlier checkpoint
    and overrides Trainable.save / restore (DeveloperAPI)."""
    from ray.train._internal.session import _TrainingResult
    from ray.tune.trainable import Trainable, trainable

    assert trainable._TrainingResult is _TrainingResult, "Trainable.restore checks for another class"
    result = _TrainingResult(checkpoint=None, metrics={"training_iteration": 2})
    assert result.checkpoint is None and result.metrics == {"training_iteration": 2}
    assert list(inspect.signature(Trainable.save).parameters) == ["self", "checkpoint_dir"]
    assert list(inspect.signature(Trainable.restore).parameters) == ["self", "checkpoint_path"]
    assert "TRAINING_ITERATION" in inspect.getsource(Trainable.restore)  # the iteration comes from the metrics


@pytest.mark.parametrize("name", ["ray.train._internal.syncer", "ray.train._internal.storage",
                                  "ray.tune.execution.experiment_state"])  # fmt: skip
def test_ray_logs_failed_storage_copies_to_its_module_loggers(name):
    """tune_lsd/search/outages.py filters these loggers during a storage outage."""
    from tune_lsd.search.outages import RAY_STORAGE_LOGGERS

    module = importlib.import_module(name)
    assert name in RAY_STORAGE_LOGGERS
    assert isinstance(module.logger, logging.Logger) and module.logger.name == name


def test_ray_reads_the_global_checkpoint_period_from_the_environment():
    """docs/scale.md tells users to set TUNE_GLOBAL_CHECKPOINT_S (Ray's default: "auto")."""
    from ray.tune.execution import tune_controller

    assert 'os.getenv("TUNE_GLOBAL_CHECKPOINT_S", "auto")' in inspect.getsource(tune_controller)


def test_ray_logs_a_failed_checkpoint_deletion_from_its_controller():
    """tune_lsd/search/stale_checkpoints.py drops this record: Ray's controller logs it, and
    Ray updates its checkpoint list before deleting (so a failed deletion loses nothing)."""
    from ray.train._internal import checkpoint_manager, storage
    from ray.tune.execution import tune_controller

    from tune_lsd.search.stale_checkpoints import RAY_CONTROLLER_LOGGER, RAY_DELETE

    assert tune_controller.logger.name == RAY_CONTROLLER_LOGGER
    assert '"Trial %s: Error handling checkpoint %s"' in inspect.getsource(tune_controller)
    assert callable(getattr(storage, RAY_DELETE))
    source = inspect.getsource(checkpoint_manager._CheckpointManager.register_checkpoint)
    assert source.index("self._checkpoint_results = [") < source.index(f"{RAY_DELETE}(")


def test_ray_logs_a_failed_restore_from_inside_its_handler_then_starts_afresh():
    """tune_lsd/search/failed_restore.py raises on this record: Ray's controller logs it in the
    ``except`` block around its resume (so a filter's error leaves ``__init__``), unless fail_fast."""
    from ray.tune.execution import tune_controller

    from tune_lsd.search.failed_restore import RAY_RESTORE_FAILED
    from tune_lsd.search.stale_checkpoints import RAY_CONTROLLER_LOGGER

    assert tune_controller.logger.name == RAY_CONTROLLER_LOGGER
    source = inspect.getsource(tune_controller.TuneController.__init__)
    resume, logged = source.index("self.resume(resume_config=resume_config)"), source.index(f'"{RAY_RESTORE_FAILED}"')
    assert resume < source.index("except Exception", resume) < logged < source.index('"Restarting experiment."')
    assert f'logger.exception("{RAY_RESTORE_FAILED}")' in source


def test_optuna_search_keeps_its_running_and_completed_trials():
    """tune_lsd/search/searchers.py ResumableOptunaSearch._knows reads _ot_trials and _completed_trials."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric="m", mode="max")
    assert isinstance(searcher._ot_trials, dict) and isinstance(searcher._completed_trials, (set, dict))
    assert "x" not in searcher._ot_trials and "x" not in searcher._completed_trials  # what _knows asks


def test_mlflow_reads_credentials_from_the_environment_and_its_file(monkeypatch, tmp_path):
    """tune_lsd/tracking/store.py client_credentials uses mlflow.utils.credentials.read_mlflow_creds."""
    from mlflow.utils.credentials import read_mlflow_creds

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "team")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    credentials = read_mlflow_creds()
    assert (credentials.username, credentials.password) == ("team", "secret")


def test_mlflow_takes_its_retries_and_timeout_from_the_environment():
    """tune_lsd/cli and tracking/store.py set MLFLOW_HTTP_REQUEST_MAX_RETRIES / _TIMEOUT."""
    from mlflow import environment_variables

    assert environment_variables.MLFLOW_HTTP_REQUEST_MAX_RETRIES.name == "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
    assert environment_variables.MLFLOW_HTTP_REQUEST_TIMEOUT.name == "MLFLOW_HTTP_REQUEST_TIMEOUT"


@pytest.mark.parametrize(
    ("artifact_uri", "repository"),
    [("/tmp/artifacts", "LocalArtifactRepository"), ("mlflow-artifacts:/1/abc/artifacts", "HttpArtifactRepository")],
)
def test_mlflow_artifact_repositories_delete_what_they_hold(artifact_uri, repository):
    """tune_lsd/tracking/retention.py deletes trial models through get_artifact_repository(...)
    .delete_artifacts (MlflowClient has no delete): the base class's is a silent no-op, so each
    store tune_lsd writes to (a folder, a tracking server's proxy) must override it."""
    from mlflow.store.artifact.artifact_repo import ArtifactRepository
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    found = get_artifact_repository(artifact_uri, tracking_uri="http://127.0.0.1:5000")
    assert repository in [base.__name__ for base in type(found).__mro__]
    assert type(found).delete_artifacts is not ArtifactRepository.delete_artifacts, (
        f"MLflow's {repository} no longer deletes artifacts: update tune_lsd/tracking/retention.py"
    )


def test_torch_gpu_memory_calls_exist():
    """tune_lsd/engine.py release_device_memory calls these on a GPU only (never in CI)."""
    import torch
    import torch._dynamo

    assert callable(getattr(torch._C, "_cuda_clearCublasWorkspaces", None))
    assert callable(getattr(torch._dynamo, "reset", None))


def test_torch_batch_norms_share_a_base_class():
    """tune_lsd/models.py (frozen BatchNorm) and losses/lsd.py (the teacher's batch statistics)
    find every BatchNorm through nn.modules.batchnorm._BatchNorm."""
    from torch import nn

    base = nn.modules.batchnorm._BatchNorm
    assert all(issubclass(kind, base) for kind in (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm))
    assert hasattr(nn.BatchNorm2d(3), "track_running_stats")
