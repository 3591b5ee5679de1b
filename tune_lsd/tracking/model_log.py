"""The search's best model as an MLflow pyfunc model: logged, registered, loaded.

The model's code is a file the caller names (tune_lsd's is ``tune_lsd/serving/pyfunc_model.py``,
"models from code"): loading the model needs torch, numpy and mlflow (pinned in its
requirements), not tune_lsd.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from tune_lsd.errors import first_line
from tune_lsd.tracking.names import MODEL_DIR, MODEL_METADATA_KEY
from tune_lsd.tracking.store import TrackingContext, TrackingError, retry


def log_best_model(
    context: TrackingContext,
    run_id: str,
    model_name: str,
    code_file: Path,
    files: dict[str, Path],
    input_example,
    description: dict[str, Any],
    aliases: tuple[str, ...] = ("champion",),
) -> int:
    """Log an embedding model (``code_file`` run by MLflow when the model is loaded, ``files``
    from :func:`tune_lsd.serving.write_model_files`) as an MLflow pyfunc model of run
    ``run_id``, register it as a new version of ``model_name`` with ``aliases`` (an alias
    moves to this version); returns the version."""
    import numpy as np
    import torch
    from mlflow.models import Model, ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    mlflow.set_tracking_uri(context.tracking_uri)
    mlflow.set_experiment(experiment_id=context.experiment_id)  # the LoggedModel's experiment
    signature = ModelSignature(  # any batch size, height, width and channel count in
        inputs=Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, description["embedding_dim"]))]),
    )
    requirements = [
        f"mlflow=={mlflow.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={np.__version__}",
    ]
    info = retry(
        lambda: Model.log(
            artifact_path=None,
            name=MODEL_DIR,
            flavor=mlflow.pyfunc,
            run_id=run_id,
            python_model=str(code_file),
            artifacts={k: str(v) for k, v in files.items()},
            signature=signature,
            input_example=input_example,
            pip_requirements=requirements,
            metadata={MODEL_METADATA_KEY: description},
            registered_model_name=model_name,
        ),
        "log_model",
        attempts=2,
    )
    client = MlflowClient(context.tracking_uri)
    for alias in aliases:
        client.set_registered_model_alias(model_name, alias, info.registered_model_version)
    return int(info.registered_model_version)


def load_embedding_model(model_uri: str, tracking_uri: str | None = None):
    """An MLflow pyfunc model logged by tune_lsd (``models:/NAME@champion``, ``runs:/RUN/model``, ...)."""
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as error:  # MLflow raises many types for a URI it cannot resolve
        raise TrackingError(f"cannot load model {model_uri}: {first_line(error)}") from None
    if MODEL_METADATA_KEY not in (model.metadata.metadata or {}):
        raise TrackingError(f"{model_uri} is an MLflow model but not a tune_lsd embedding model")
    return model
