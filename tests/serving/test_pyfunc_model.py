"""The search's champion as an MLflow model (tune_lsd/serving/pyfunc_model.py, logged by
tune_lsd/tracking/model_log.py):
loaded in a fresh Python without tune_lsd, and served over HTTP, it gives the engine's embeddings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest
import yaml
from mlflow.artifacts import download_artifacts
from mlflow.tracking import MlflowClient
from searching import free_port, kill_tree

from tune_lsd.engine import Trainer
from tune_lsd.tracking import CHECKPOINT_DIR, MODEL_FILE, default_tracking_uri

pytestmark = pytest.mark.slow

LOAD_WITHOUT_TUNE_LSD = """
import sys
for name in ("tune_lsd", "search_spaces", "trainables"):
    sys.modules[name] = None  # any import of them fails: the model must not need them
import mlflow
import numpy as np

mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model("models:/asha-best@champion")
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def champion(asha_search, tmp_path_factory):
    """The champion's registry entry, and the engine's embeddings of its validation images."""
    folder, _ = asha_search
    uri = default_tracking_uri(folder / "runs")
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("asha-best", "champion")
    work = tmp_path_factory.mktemp("champion")
    model_file = client.download_artifacts(version.run_id, f"{CHECKPOINT_DIR}/{MODEL_FILE}", str(work))
    trainer = Trainer.from_checkpoint(model_file, overrides={"runtime.progress": False})  # as `tune-lsd evaluate`
    val = trainer.splits.val
    np.save(work / "images.npy", val.images)
    return {
        "uri": uri,
        "client": client,
        "version": version,
        "images": val.images,
        "expected": trainer.embed(val).numpy(),
        "work": work,
    }


def test_the_champion_is_the_best_trial_and_a_pinned_pyfunc_model(champion, asha_search):
    client, version = champion["client"], champion["version"]
    experiment = client.get_experiment_by_name("asha")
    trials = client.search_runs([experiment.experiment_id], "tags.`tune_lsd.search` = 'trial'")
    best = max(trials, key=lambda r: r.data.metrics["best/val/recall_at_1"])
    assert version.run_id == best.info.run_id
    local = download_artifacts(
        artifact_uri=client.get_model_version_download_uri("asha-best", version.version),
        dst_path=str(champion["work"] / "model"),
    )
    mlmodel = yaml.safe_load(open(os.path.join(local, "MLmodel")))
    requirements = open(os.path.join(local, "requirements.txt")).read().split()
    assert "python_function" in mlmodel["flavors"] and mlmodel["metadata"]["tune_lsd"]["channels"] == 1
    inputs, outputs = (json.loads(mlmodel["signature"][part])[0]["tensor-spec"] for part in ("inputs", "outputs"))
    assert inputs == {"dtype": "uint8", "shape": [-1, -1, -1, -1]}
    assert outputs == {"dtype": "float32", "shape": [-1, champion["expected"].shape[1]]}
    assert {r.split("==")[0] for r in requirements} == {"mlflow", "torch", "numpy"}
    assert all("==" in r for r in requirements)
    size_mb = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(local) for f in fs) / 2**20
    print(f"logged model: {size_mb:.1f} MB")
    assert size_mb < 100


def test_pyfunc_in_a_fresh_python_without_tune_lsd_gives_the_engines_embeddings(champion):
    work = champion["work"]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_WITHOUT_TUNE_LSD,
            champion["uri"],
            str(work / "images.npy"),
            str(work / "pyfunc.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(work / "pyfunc.npy"), champion["expected"], atol=1e-5)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def test_the_served_champion_answers_with_the_same_embeddings(champion, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            "models:/asha-best@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        # MLflow starts `uvicorn` by name: the environment's bin folder must be on PATH (as when activated).
        env={
            **os.environ,
            "MLFLOW_TRACKING_URI": champion["uri"],
            "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
        },
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while not _answers(f"http://127.0.0.1:{port}/ping"):
            assert server.poll() is None and time.time() < deadline, (tmp_path / "serve.log").read_text()[-3000:]
            time.sleep(0.5)
        images = champion["images"][:64]
        body = json.dumps({"inputs": images.tolist()}).encode()
        latencies = []
        for _ in range(5):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=120) as response:
                answer = json.loads(response.read())
            latencies.append(time.perf_counter() - started)
        print(f"serving 64 images: median {np.median(latencies) * 1000:.0f} ms")
        np.testing.assert_allclose(np.array(answer["predictions"], np.float32), champion["expected"][:64], atol=1e-5)
    finally:
        kill_tree(server)
        log.close()
