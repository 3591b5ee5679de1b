"""tune_lsd/tracking/retention.py against a real MLflow SQLite store: the models of ended trials
beyond the best N are deleted (and their runs tagged), the others' and running trials' stay."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient
from trial_runs import logged_trial_run

from tune_lsd import tracking

MODEL_BYTES = 3000


def has_model(client: MlflowClient, run_id: str) -> bool:
    return [f.path for f in client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)] == ["checkpoint/model.pt"]


@pytest.mark.parametrize(("mode", "kept"), [("max", {"b", "e"}), ("min", {"a", "d"})])
def test_only_the_best_ended_trials_keep_their_models(tmp_path, mode, kept):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "keep", {}, tmp_path / "artifacts")
    values = {"a": 0.5, "b": 0.9, "c": 0.7, "d": 0.1, "e": 0.8}
    states = {"a": "completed", "b": "completed", "c": "stopped early", "d": "errored", "e": "completed"}
    runs = {t: logged_trial_run(context, t, 2, states[t], best=v, model_bytes=MODEL_BYTES) for t, v in values.items()}
    # still running: no state yet, whatever its value (its last epochs may still raise it)
    runs["r"] = logged_trial_run(context, "r", 1, None, best=0.2 if mode == "max" else 0.95, model_bytes=MODEL_BYTES)
    # ended, beyond the best, its model not in MLflow yet: nothing to delete, not tagged
    runs["n"] = logged_trial_run(context, "n", 1, "completed", best=0.3 if mode == "max" else 0.85)

    deleted, freed = tracking.keep_best_models(context, "val/recall@1", mode, keep=2)

    client = MlflowClient(uri)
    beyond = set(values) - kept
    assert (deleted, freed) == (len(beyond), len(beyond) * MODEL_BYTES)
    assert {t for t in (*values, "r") if has_model(client, runs[t])} == kept | {"r"}
    tags = {t: client.get_run(run_id).data.tags.get(tracking.MODEL_TAG) for t, run_id in runs.items()}
    assert tags == {t: "deleted" if t in beyond else None if t == "n" else "uploaded" for t in runs}
    assert tracking.keep_best_models(context, "val/recall@1", mode, keep=2) == (0, 0)  # nothing left to do


def test_fewer_ended_trials_than_kept_keep_every_model(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "few", {}, tmp_path / "artifacts")
    run_ids = [logged_trial_run(context, t, 1, "completed", best=0.1 * i, model_bytes=10) for i, t in enumerate("ab")]
    assert tracking.keep_best_models(context, "val/recall@1", "max", keep=2) == (0, 0)
    assert all(has_model(MlflowClient(uri), run_id) for run_id in run_ids)


def test_ties_keep_only_as_many_models_as_asked_and_the_best_trial_among_them(tmp_path):
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "ties", {}, tmp_path / "artifacts")
    values = {"a": 0.5, "b": 0.5, "c": 0.5, "d": 0.5, "e": 0.1}  # small validation sets tie often
    runs = {t: logged_trial_run(context, t, 1, "completed", best=v, model_bytes=10) for t, v in values.items()}

    assert tracking.keep_best_models(context, "val/recall@1", "max", keep=2) == (3, 30)

    client = MlflowClient(uri)
    kept = {run_id for run_id in runs.values() if has_model(client, run_id)}
    assert len(kept) == 2 and runs["e"] not in kept
    assert tracking.best_trial_run(uri, "ties", "val/recall@1").info.run_id in kept  # what the search registers


def test_the_sweep_during_a_search_reads_only_the_runs_holding_a_model(tmp_path):
    """every_run=False: the runs tagged as holding a model (what the sweep of a long search
    reads, a few whatever the trials run); a model logged by an older tune_lsd (no tag) is left
    to the sweep over every run, at the search's end or by prune."""
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "few", {}, tmp_path / "artifacts")
    runs = {t: logged_trial_run(context, t, 1, "completed", best=v, model_bytes=10) for t, v in zip("abc", (3, 2, 1))}
    client = MlflowClient(uri)
    client.delete_tag(runs["c"], tracking.MODEL_TAG)  # (as an older tune_lsd left it)

    assert tracking.keep_best_models(context, "val/recall@1", "max", keep=1, every_run=False) == (1, 10)
    assert {t for t, run_id in runs.items() if has_model(client, run_id)} == {"a", "c"}
    assert tracking.keep_best_models(context, "val/recall@1", "max", keep=1) == (1, 10)
    assert {t for t, run_id in runs.items() if has_model(client, run_id)} == {"a"}
