"""A trained model at work: embeddings of images, retrieval pages, and the MLflow model's code.

- :mod:`~tune_lsd.serving.embedder`: a tune_lsd model file -> an image embedder, and the
  files of the MLflow model (:func:`write_model_files`).
- :mod:`~tune_lsd.serving.retrieval`: ``tune-lsd embed`` / ``retrieve`` (an HTML page of
  nearest neighbours, a CSV, Recall@K when the folders are labelled).
- :mod:`~tune_lsd.serving.pyfunc_model`: the code MLflow stores with every logged model
  ("models from code"); it imports nothing of tune_lsd.

Importing this package imports torch and timm (the search driver does it in a thread while
its trials train).
"""

from tune_lsd.serving.embedder import (
    MODEL_CODE_FILE,
    ImageFolder,
    ImageReadError,
    embed_images,
    embedder_from_snapshot,
    example_images,
    read_image_folder,
    write_model_files,
)
from tune_lsd.serving.retrieval import Embedder, embed_folder, is_model_uri, load_embedder, write_retrieval

__all__ = [
    "MODEL_CODE_FILE",
    "Embedder",
    "ImageFolder",
    "ImageReadError",
    "embed_folder",
    "embed_images",
    "embedder_from_snapshot",
    "example_images",
    "is_model_uri",
    "load_embedder",
    "read_image_folder",
    "write_model_files",
    "write_retrieval",
]
