"""tune_lsd/search/finalize.py: `tune-lsd finalize NAME` retrains the best config on all training
classes, tests it once, logs the run and registers it as the champion; the champion loaded
through mlflow.pyfunc gives the test Recall@1 the command printed."""

from __future__ import annotations

import re

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from searching import TINY, tune_lsd

from tune_lsd.config import Config
from tune_lsd.engine import Trainer
from tune_lsd.metrics import retrieval_metrics
from tune_lsd.tracking import SEARCH_TAG, default_tracking_uri

pytestmark = pytest.mark.slow


def test_finalize_registers_the_retrained_model_as_champion_and_pyfunc_gives_the_printed_recall(tmp_path):
    searched = tune_lsd(
        "search",
        "--space",
        "lsd",
        "--name",
        "fin",
        "--num-samples",
        "2",
        "--max-concurrent",
        "2",
        "--scheduler",
        "fifo",
        "--set",
        "schedule.epochs=2",
        *TINY,
        cwd=tmp_path,
    )
    assert searched.returncode == 0, searched.stdout[-3000:] + searched.stderr[-2000:]
    finalized = tune_lsd("finalize", "fin", "--set", "schedule.epochs=3", cwd=tmp_path)
    assert finalized.returncode == 0, finalized.stdout[-3000:] + finalized.stderr[-2000:]
    out = finalized.stdout
    printed = {
        label: float(value)
        for label, value in re.findall(r"^  (final model|untrained network|raw pixels) +([0-9.]+)", out, flags=re.M)
    }
    assert set(printed) == {"final model", "untrained network", "raw pixels"}, out[-2000:]
    assert "registered as models:/fin-best@champion" in out

    uri = default_tracking_uri(tmp_path / "runs")
    client = MlflowClient(uri)
    champion = client.get_model_version_by_alias("fin-best", "champion")
    search_best = client.get_model_version_by_alias("fin-best", "search-best")
    final_run, best_trial = client.get_run(champion.run_id), client.get_run(search_best.run_id)
    assert final_run.data.tags[SEARCH_TAG] == "final" and best_trial.data.tags[SEARCH_TAG] == "trial"
    assert int(champion.version) == int(search_best.version) + 1
    assert final_run.data.params["schedule.epochs"] == "3" and final_run.data.params["data.final"] == "True"
    assert final_run.data.tags["mlflow.parentRunId"] == best_trial.data.tags["mlflow.parentRunId"]
    recorded = final_run.data.metrics["test/recall_at_1"]
    assert round(recorded, 4) == printed["final model"]

    # The champion as a user loads it, on the test classes of the final config.
    import mlflow

    mlflow.set_tracking_uri(uri)
    model = mlflow.pyfunc.load_model("models:/fin-best@champion")
    config = Config.load(tmp_path / "runs" / "final" / "fin" / "run" / "config.yaml")
    test = Trainer(config.with_overrides({"runtime.progress": False})).splits.test
    embeddings = model.predict(test.images)
    recall = retrieval_metrics(np.asarray(embeddings), test.labels, (1,), nmi=False)["recall@1"]
    assert abs(recall - recorded) < 1e-6 and round(recall, 4) == printed["final model"]
