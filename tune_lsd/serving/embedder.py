"""A trained model as an image embedder: from a tune_lsd model file to embeddings, and the
files of the MLflow model that tune_lsd.tracking logs.

    snapshot = load_model_state("best.pt")  # tune_lsd.engine: a `tune-lsd train` best.pt, or a trial's model.pt
    embedder = embedder_from_snapshot(snapshot)        # the same class MLflow loads
    vectors = embedder.embed(images_uint8)             # (N, D), unit length

The embeddings are the engine's (``Trainer.embed`` on the CPU): same scaling, same resize,
same network. This module knows nothing of MLflow's tracking or of Ray.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from tune_lsd.config import Config
from tune_lsd.data.datasets import IMAGE_SUFFIXES
from tune_lsd.data.transforms import MEAN, STD
from tune_lsd.errors import TuneLsdError, first_line
from tune_lsd.models import build_model
from tune_lsd.serving import pyfunc_model
from tune_lsd.serving.pyfunc_model import NETWORK_FILE, PREPROCESSING_FILE, ImageEmbedder

EXAMPLE_IMAGES = 2  # images in a logged model's input example
MODEL_CODE_FILE = Path(pyfunc_model.__file__)  # what MLflow runs to load a logged model ("models from code")


class ImageReadError(TuneLsdError, ValueError):
    """An image file cannot be decoded (message is one line)."""


class ImageFolderError(TuneLsdError, FileNotFoundError):
    """An image folder is missing or holds no images (message is one line)."""


def input_channels(student: dict[str, torch.Tensor]) -> int:
    """The network's input channels: those of its first convolution."""
    first_conv = next(v for v in student.values() if v.ndim == 4)
    return int(first_conv.shape[1])


def network_from_snapshot(snapshot: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The student network in eval mode (weights from the snapshot, nothing downloaded) and
    the preprocessing settings that go with it."""
    config = Config.from_dict(snapshot["config"]).with_overrides({"model.pretrained": "none"})
    channels = input_channels(snapshot["student"])
    network = build_model(config.model, in_chans=channels)
    network.load_state_dict(snapshot["student"])
    preprocessing = {
        "image_size": config.data.image_size,
        "channels": channels,
        "mean": MEAN,
        "std": STD,
        "crop": config.data.eval_crop,
        "embedding_dim": config.model.embedding_dim,
        "batch_size": config.eval.batch_size,
        "backbone": config.model.backbone,
        "epoch": snapshot.get("epoch"),
    }
    return network.eval(), preprocessing


def embedder_from_snapshot(snapshot: dict[str, Any]) -> ImageEmbedder:
    """The embedder of a model file, run in this process (no export)."""
    return ImageEmbedder(*network_from_snapshot(snapshot))


def write_model_files(snapshot: dict[str, Any], folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """``network.pt2`` (``torch.export``, any batch size) and ``preprocessing.json`` in
    ``folder``: the artifacts of the logged MLflow model; returns their paths and the
    preprocessing settings."""
    network, preprocessing = network_from_snapshot(snapshot)
    size, channels = preprocessing["image_size"], preprocessing["channels"]
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with torch.no_grad():
        program = torch.export.export(
            network, (torch.zeros(2, channels, size, size),), dynamic_shapes={"images": {0: batch}}
        )
    folder.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, folder / NETWORK_FILE)
    (folder / PREPROCESSING_FILE).write_text(json.dumps(preprocessing, indent=2))
    return {"network": folder / NETWORK_FILE, "preprocessing": folder / PREPROCESSING_FILE}, preprocessing


def example_images(snapshot: dict[str, Any]) -> np.ndarray:
    """A small uint8 input example at the training size (a gradient: no data needed)."""
    config = Config.from_dict(snapshot["config"])
    size, channels = config.data.image_size, input_channels(snapshot["student"])
    ramp = np.linspace(0, 255, size * size * channels, dtype=np.float32).reshape(size, size, channels)
    return np.stack([ramp, 255 - ramp][:EXAMPLE_IMAGES]).astype(np.uint8)


# --- image folders ---------------------------------------------------------------------------


@dataclass
class ImageFolder:
    """The images of a folder, decoded on access (``folder[i]``, ``iter(folder)``) so that a
    folder of any size is embedded in bounded memory; with ``DIR/<class>/*``, their labels."""

    paths: list[Path]
    channels: int  # 1: decoded as grayscale, 3: as RGB
    labels: np.ndarray | None  # class index per image, or None when the images are not in class folders
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> np.ndarray:
        """Image ``index`` as uint8 (H, W) or (H, W, 3); ImageReadError when it cannot be decoded."""
        path = self.paths[index]
        try:
            with Image.open(path) as image:
                return np.asarray(image.convert("L" if self.channels == 1 else "RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise ImageReadError(f"cannot read image {path}: {first_line(error)}") from None

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))


def read_image_folder(folder: str | Path, channels: int) -> ImageFolder:
    """The images under ``folder`` (recursively, sorted by path), to be decoded as 1- or
    3-channel uint8. Images directly in class subfolders (``DIR/<class>/*.jpg``) are labelled
    by their folder."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageFolderError(f"image folder not found: {root}")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise ImageFolderError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    in_class_folders = all(p.parent.parent == root for p in paths)
    classes = sorted({p.parent.name for p in paths}) if in_class_folders else []
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[p.parent.name] for p in paths]) if in_class_folders else None
    return ImageFolder(paths, channels, labels, classes)


def embed_images(
    embedder, images: Iterable[np.ndarray], count: int, batch_size: int = 256, progress: bool = True
) -> np.ndarray:
    """Embeddings of ``count`` images of any sizes, read one at a time from ``images``:
    consecutive images of one size go in one call of ``embedder.predict`` (an MLflow pyfunc
    model) or ``embedder.embed``, so at most ``batch_size`` decoded images are held."""
    predict = embedder.embed if isinstance(embedder, ImageEmbedder) else embedder.predict
    chunks: list[np.ndarray] = []
    batch: list[np.ndarray] = []
    with tqdm(total=count, desc="embedding", unit="image", disable=None if progress else True) as bar:
        for image in images:
            if batch and (image.shape != batch[0].shape or len(batch) == batch_size):
                chunks.append(np.asarray(predict(np.stack(batch)), dtype=np.float32))
                bar.update(len(batch))
                batch = []
            batch.append(image)
        if batch:
            chunks.append(np.asarray(predict(np.stack(batch)), dtype=np.float32))
            bar.update(len(batch))
    return np.concatenate(chunks)
