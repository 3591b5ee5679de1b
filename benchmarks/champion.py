"""A search's champion as users load and serve it: size, test metrics through pyfunc, speed.

    .venv/bin/python benchmarks/champion.py NAME [--runs-dir runs] [--batch 64]

Prints the logged MLflow model's size; the test classes' Recall@1 and MAP@R with embeddings
from ``mlflow.pyfunc.load_model("models:/NAME-best@champion")`` next to the engine's (the
same model file through ``Trainer.embed``, as ``tune-lsd evaluate``): they must agree; the
median latency of ``mlflow models serve`` for one batch (JSON in, embeddings out; 5 requests
after a warm-up); last, the ratio of pyfunc's to the engine's embedding time.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np

from tune_lsd.cluster import end_process_tree
from tune_lsd.engine import Trainer
from tune_lsd.metrics import retrieval_metrics
from tune_lsd.tracking import SEARCH_TAG, default_tracking_uri, download_trial_model

REQUESTS = 5


def serving_latency_s(model_uri: str, tracking_uri: str, images: np.ndarray, expected: np.ndarray) -> float:
    """Median seconds of one /invocations request to ``mlflow models serve`` on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }  # MLflow runs `uvicorn`
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "models",
            "serve",
            "-m",
            model_uri,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise RuntimeError("mlflow models serve did not start") from None
                time.sleep(0.5)
        body = json.dumps({"inputs": images.tolist()}).encode()
        latencies = []
        for _ in range(REQUESTS + 1):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/invocations", data=body, headers={"Content-Type": "application/json"}
            )
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=300) as response:
                answer = np.array(json.loads(response.read())["predictions"], np.float32)
            latencies.append(time.perf_counter() - started)
        difference = float(np.abs(answer - expected).max())
        print(f"served embeddings: largest difference from the engine's {difference:.2e}")
        return float(np.median(latencies[1:]))
    finally:
        end_process_tree(server.pid, grace_s=5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="the search name")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--batch", type=int, default=64, help="images per serving request")
    args = parser.parse_args()

    tracking_uri = default_tracking_uri(Path(args.runs_dir).resolve())
    model_uri = f"models:/{args.name}-best@champion"
    client = mlflow.MlflowClient(tracking_uri)
    version = client.get_model_version_by_alias(f"{args.name}-best", "champion")
    assert version.run_id is not None, "the champion's model version names no run"
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=client.get_model_version_download_uri(f"{args.name}-best", version.version), dst_path=folder
        )
        size_mb = sum(f.stat().st_size for f in Path(local).rglob("*") if f.is_file()) / 2**20
        model_file = download_trial_model(tracking_uri, version.run_id, Path(folder))
        trainer = Trainer.from_checkpoint(model_file, overrides={"runtime.progress": False})
    test = trainer.splits.test
    trained_by = {"final": "the final model's run", "trial": "a search trial's run"}.get(
        client.get_run(version.run_id).data.tags.get(SEARCH_TAG, ""), "run"
    )
    print(
        f"champion: {model_uri} = version {version.version}, {trained_by} {version.run_id}; "
        f"logged model {size_mb:.1f} MB; {len(test)} test images in {test.num_classes} classes"
    )

    started = time.perf_counter()
    by_engine = trainer.embed(test).cpu().numpy()
    engine_s = time.perf_counter() - started
    mlflow.set_tracking_uri(tracking_uri)
    model = mlflow.pyfunc.load_model(model_uri)
    started = time.perf_counter()
    by_pyfunc = model.predict(test.images)
    pyfunc_s = time.perf_counter() - started

    ks = trainer.config.eval.ks
    for name, vectors in (("engine", by_engine), ("pyfunc", by_pyfunc)):
        metrics = retrieval_metrics(vectors, test.labels, ks, nmi=False)
        print(f"test through the {name}: Recall@1 {metrics['recall@1']:.4f}  MAP@R {metrics['map@r']:.4f}")
    print(f"largest embedding difference pyfunc - engine: {float(np.abs(by_pyfunc - by_engine).max()):.2e}")
    batch = test.images[: args.batch]
    latency = serving_latency_s(model_uri, tracking_uri, batch, by_engine[: len(batch)])
    print(
        f"serving: median {latency * 1000:.0f} ms for a batch of {len(batch)} images "
        f"({batch.shape[1]}x{batch.shape[2]}x{batch.shape[3]} uint8)"
    )
    print(f"embedding {len(test)} images: engine {engine_s:.2f} s, pyfunc {pyfunc_s:.2f} s")
    print(f"ratio pyfunc/engine embedding time: {pyfunc_s / engine_s:.2f}")


if __name__ == "__main__":
    main()
