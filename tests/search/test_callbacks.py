"""tune_lsd/search/callbacks.py and running.py with real Ray Tune trials and a real MLflow
SQLite store, without a search: the lines a search prints, the states its trials get in MLflow,
the trials it records as finished, and the runs of lost trials it deletes."""

from __future__ import annotations

import pickle

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial
from trial_runs import logged_trial_run

from trainables.finished import finished_result
from tune_lsd import tracking
from tune_lsd.search.callbacks import ModelRetentionCallback, ProgressCallback, TrialCountCallback, TrialStateCallback
from tune_lsd.search.running import RunningSearch, running, running_search
from tune_lsd.search.searchers import TrialCountedSearch
from tune_lsd.storage import Location

EPOCHS = 3


def trial(trial_id: str, epochs: int = 0, **config) -> Trial:
    """A real Ray Tune trial (not started) that reported ``epochs`` epochs."""
    made = Trial("DMLTrainable", config=config, trial_id=trial_id, stub=True)
    if epochs:
        made.update_last_result({"epoch": epochs, "training_iteration": epochs, "val/recall@1": 0.1 * epochs})
    return made


@pytest.fixture
def search(tmp_path):
    """A search's MLflow run in a SQLite store and its finished-trials folder, declared running."""
    uri = tracking.default_tracking_uri(tmp_path)
    context = tracking.start_search_run(uri, "cb", {"space": "x"}, tmp_path / "artifacts", ray_experiment="cb")
    declared = RunningSearch(context, EPOCHS, Location(str(tmp_path / "finished")), str(tmp_path / "ray"))
    with running(declared):
        yield declared


def state_tags(context: tracking.TrackingContext) -> dict[str, tuple[str, str | None]]:
    """Each trial's (state, error) tags, once the driver's records are delivered."""
    assert tracking.search_recorder(context).close() == 0
    runs = tracking.trial_runs(context.tracking_uri, "cb")
    return {
        r.data.tags[tracking.TRIAL_ID_TAG]: (r.data.tags.get(tracking.STATE_TAG), r.data.tags.get("tune_lsd.error"))
        for r in runs
    }


def test_running_search_is_declared_only_inside_the_block(tmp_path):
    declared = RunningSearch(None, 1, Location(str(tmp_path)), str(tmp_path))
    with pytest.raises(RuntimeError, match="only inside"):
        running_search()
    with pytest.raises(KeyError), running(declared):
        assert running_search() is declared
        raise KeyError("the fit failed")
    with pytest.raises(RuntimeError, match="only inside"):  # gone after a failed fit too
        running_search()


def test_progress_lines_name_each_event_with_the_trial_counts():
    lines: list[str] = []
    progress = ProgressCallback("val/recall@1", EPOCHS, num_samples=3, log=lines.append)
    first = trial("aaaa1111", **{"optim.lr": 0.0012345678, "lsd.teacher": "ema", "lsd.ema_momentum": None})
    second = trial("bbbb2222", **{"optim.lr": 0.1})
    progress.on_trial_start(0, [], first)
    progress.on_trial_start(0, [], second)
    result = {"epoch": 2, "val/recall@1": 0.71234, "best/val/recall@1": 0.8, "train/loss": 0.5, "train/epoch_s": 3.2}
    progress.on_trial_result(0, [], first, result)
    progress.on_trial_complete(0, [], trial("aaaa1111", epochs=EPOCHS))
    progress.on_trial_complete(0, [], trial("bbbb2222", epochs=1))
    progress.on_trial_error(0, [], trial("cccc3333"))  # (the e2e NaN test reads a real error file)

    text = [line.split("] ", 1)[1] for line in lines]  # without the elapsed time
    assert text == [
        "aaaa1111 started (1/3): lsd.teacher=ema, optim.lr=0.001235",  # a condition that is false is left out
        "bbbb2222 started (2/3): optim.lr=0.1",
        "aaaa1111 epoch 2/3  val/recall@1 0.7123  (best 0.8000)  loss 0.5000  3 s/epoch",
        "aaaa1111 completed  [1/3 trials done]",
        "bbbb2222 stopped early after 1 epochs  [2/3 trials done]",
        "cccc3333 errored: trial failed (no error file)  [3/3 trials done]",
    ]
    assert all(line.startswith("[") and " s] " in line for line in lines)


def test_trial_states_reach_mlflow_and_a_stopped_trial_is_recorded_as_finished(search):
    for trial_id, epochs in (("done", EPOCHS), ("stopped", 1), ("failed", 2)):
        logged_trial_run(search.context, trial_id, epochs)
    states = TrialStateCallback()
    states.on_trial_complete(0, [], trial("done", epochs=EPOCHS))
    states.on_trial_complete(0, [], trial("stopped", epochs=1))
    failed = trial("failed", epochs=2)
    states.on_trial_error(0, [], failed)

    assert state_tags(search.context) == {
        "done": ("completed", None),
        "stopped": ("stopped early", None),
        "failed": ("errored", "trial failed (no error file)"),
    }
    # ASHA stopped it: a resumed search must not train it again (a completed trial records itself)
    recorded = finished_result(search.finished_dir, "stopped")
    assert recorded is not None and recorded["epoch"] == 1
    assert finished_result(search.finished_dir, "done") is None


def test_the_end_of_a_fit_deletes_only_the_runs_of_lost_trials_with_one_line(search, capsys):
    known = logged_trial_run(search.context, "known", 1)
    lost = logged_trial_run(search.context, "lost", 2)  # opened its run before an earlier driver was killed

    TrialStateCallback().on_experiment_end([trial("known", epochs=1)])

    out = capsys.readouterr().out
    assert "MLflow: deleted the run of trial lost (2 epochs logged): it started after the last state Ray" in out
    client = MlflowClient(search.context.tracking_uri)
    assert client.get_run(lost).info.lifecycle_stage == "deleted"
    assert client.get_run(known).info.lifecycle_stage == "active"


def test_the_trial_count_follows_tunes_trial_list():
    from tune_lsd.search import SearchSettings, prepare_space, tune_config

    settings = SearchSettings(name="count", searcher="random", scheduler="fifo", num_samples=4)
    counted = tune_config(settings, prepare_space(settings), epochs=EPOCHS).search_alg
    assert isinstance(counted, TrialCountedSearch)
    TrialCountCallback(counted).on_step_begin(0, [trial("a"), trial("b")])
    assert counted._counter == 2  # what Ray reads to know how many trials it created


def test_model_retention_deletes_the_models_beyond_the_best_every_few_ended_trials_in_a_thread(search):
    values = [0.1, 0.9, 0.3, 0.7, 0.5]
    runs = {
        f"t{i}": logged_trial_run(search.context, f"t{i}", 1, "completed", best=v, model_bytes=100)
        for i, v in enumerate(values)
    }
    callback = ModelRetentionCallback("val/recall@1", "max", keep=2, every=3)
    client = MlflowClient(search.context.tracking_uri)

    def with_model() -> set[str]:
        return {t for t, run_id in runs.items() if client.list_artifacts(run_id, tracking.CHECKPOINT_DIR)}

    for trial_id in ("t0", "t1"):
        callback.on_trial_complete(0, [], trial(trial_id, 1))
    assert callback.sweeping is None and with_model() == set(runs)  # not yet: every 3 ended trials
    callback.on_trial_complete(0, [], trial("t2", 1))
    restored = pickle.loads(pickle.dumps(callback))  # (Ray Tune saves its callbacks with the search)
    callback.on_experiment_end([])
    assert with_model() == {"t1", "t3"}  # 0.9 and 0.7: the best two
    assert restored.sweeping is None and restored.ended == 3
