"""The code of a logged tune_lsd model: raw uint8 images in, L2-normalised embeddings out.

MLflow stores this file with every model tune_lsd logs ("models from code") and runs it when
the model is loaded, so ``mlflow.pyfunc.load_model(uri)`` needs torch, numpy and mlflow but
not tune_lsd. The network is a ``torch.export`` program (``network.pt2``); the preprocessing
that evaluation applied before it (scale to [-1, 1], centre crop, bilinear antialiased
resize to the training size) is done here, with its constants from ``preprocessing.json``.

Input: a uint8 array ``(N, H, W)`` or ``(N, H, W, C)`` with C = 1, 3 or 4, any H and W (all
images of one call share a size). Colour is converted to what the network was trained on
(luma for grayscale networks, repeated channels for colour ones, alpha dropped).
Output: float32 ``(N, D)``, unit-length rows.
"""

from __future__ import annotations

import json

import mlflow.models
import numpy as np
import torch
import torch.nn.functional as F
from mlflow.pyfunc import PythonModel

NETWORK_FILE = "network.pt2"
PREPROCESSING_FILE = "preprocessing.json"
LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, as PIL's "L" conversion


def to_network_input(
    images: np.ndarray, channels: int, image_size: int, mean: float, std: float, crop: float = 1.0
) -> torch.Tensor:
    """uint8 ``(N, H, W[, C])`` -> normalised float32 ``(N, channels, size, size)``: the centre
    ``crop`` share of each side, resized to ``image_size``."""
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    batch = torch.from_numpy(np.require(images, requirements=["C_CONTIGUOUS", "WRITEABLE"]))
    if batch.ndim == 3:
        batch = batch[..., None]
    if batch.ndim != 4 or batch.shape[-1] not in (1, 3, 4):
        raise ValueError(f"images must be (N, H, W) or (N, H, W, C) with C in 1, 3, 4; got {tuple(images.shape)}")
    batch = batch[..., :3].permute(0, 3, 1, 2).float()
    if channels == 1 and batch.shape[1] == 3:
        batch = (batch * torch.tensor(LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif batch.shape[1] != channels:
        batch = batch.repeat(1, channels, 1, 1)
    batch = batch.mul_(1.0 / (255.0 * std)).sub_(mean / std)
    if crop < 1.0:
        height, width = batch.shape[-2:]
        side_h, side_w = max(1, round(height * crop)), max(1, round(width * crop))
        top, left = (height - side_h) // 2, (width - side_w) // 2
        batch = batch[..., top : top + side_h, left : left + side_w]
    if batch.shape[-2:] != (image_size, image_size):
        batch = F.interpolate(
            batch, size=(image_size, image_size), mode="bilinear", antialias=True, align_corners=False
        )
    return batch


class ImageEmbedder(PythonModel):
    """Embeds images with a tune_lsd network, in batches, on the CPU."""

    def __init__(self, network: torch.nn.Module | None = None, preprocessing: dict | None = None) -> None:
        self.network = network
        self.preprocessing = preprocessing

    def load_context(self, context) -> None:
        self.network = torch.export.load(context.artifacts["network"]).module()
        with open(context.artifacts["preprocessing"]) as file:
            self.preprocessing = json.load(file)

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        return self.embed(np.asarray(model_input))

    @torch.no_grad()
    def embed(self, images: np.ndarray) -> np.ndarray:
        """float32 ``(N, D)`` embeddings of uint8 images, in batches of ``batch_size``."""
        settings, network = self.preprocessing, self.network
        if settings is None or network is None:
            raise RuntimeError("the model was used before MLflow loaded its network and preprocessing")
        chunks = [np.zeros((0, settings["embedding_dim"]), np.float32)]
        for start in range(0, len(images), settings["batch_size"]):
            batch = to_network_input(
                images[start : start + settings["batch_size"]],
                settings["channels"],
                settings["image_size"],
                settings["mean"],
                settings["std"],
                settings.get("crop", 1.0),
            )
            chunks.append(network(batch).float().numpy())
        return np.concatenate(chunks)


mlflow.models.set_model(ImageEmbedder())
