"""Batched image transforms on tensors.

Images stay uint8 in memory; a batch is turned into a normalised float tensor on the
training device, then augmented there in one vectorised call (every image gets its own
random crop and flip), which is far cheaper than per-image PIL transforms in a loader.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

# (x - 127.5) / 127.5: matches the EfficientNet-Lite0 weights' input and suits glyphs.
MEAN, STD = 0.5, 0.5
FLIP_FREE_DATASETS = {"glyphs", "fashion_mnist"}  # mirrored characters are other characters


def resolve_augment(augment: str, dataset: str) -> str:
    """``auto`` -> ``crop`` for glyph-like data, ``crop_flip`` for photos."""
    if augment != "auto":
        return augment
    return "crop" if dataset in FLIP_FREE_DATASETS else "crop_flip"


def to_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """(N, H, W, C) uint8 -> normalised (N, C, H, W) float32 on ``device``."""
    return normalise(torch.from_numpy(images).to(device, non_blocking=True))


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 tensor -> normalised (N, C, H, W) float32 on the same device."""
    return batch.permute(0, 3, 1, 2).float().mul_(1.0 / (255.0 * STD)).sub_(MEAN / STD)  # (x/255 - MEAN) / STD


def center_crop(batch: torch.Tensor, share: float) -> torch.Tensor:
    """The centred square of ``share`` times the side of (N, C, H, W) images (a view; no-op at 1)."""
    if share >= 1.0:
        return batch
    height, width = batch.shape[-2:]
    side_h, side_w = max(1, round(height * share)), max(1, round(width * share))
    top, left = (height - side_h) // 2, (width - side_w) // 2
    return batch[..., top : top + side_h, left : left + side_w]


def resize(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Evaluation transform: resize to ``size`` x ``size`` (no-op when already that size)."""
    if batch.shape[-1] == size and batch.shape[-2] == size:
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def random_resized_crop(
    batch: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.6, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    flip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Per-image random resized crop (area share in ``scale``, aspect in ``ratio``) and flip.

    Implemented as one affine resampling of the whole batch: each image's crop box becomes a
    scaling + translation of the sampling grid, so no Python loop runs over images.
    """
    n = batch.shape[0]
    # Drawn on the CPU generator (the same crops on every device), copied in one transfer.
    draws = torch.rand(5, n, generator=generator).to(batch.device, non_blocking=True)
    area = scale[0] + (scale[1] - scale[0]) * draws[0]
    log_ratio = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * draws[1]
    aspect = torch.exp(log_ratio)
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # crop size as a share of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    centre_x = (1 - width) * (2 * draws[2] - 1)  # crop stays inside the image (grid coords in [-1, 1])
    centre_y = (1 - height) * (2 * draws[3] - 1)
    mirror = torch.where(draws[4] < 0.5, -1.0, 1.0) if flip else torch.ones(n, device=batch.device)

    theta = torch.zeros(n, 2, 3, device=batch.device, dtype=batch.dtype)
    theta[:, 0, 0] = width * mirror
    theta[:, 0, 2] = centre_x
    theta[:, 1, 1] = height
    theta[:, 1, 2] = centre_y
    grid = F.affine_grid(theta, [n, batch.shape[1], size, size], align_corners=False)
    return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border", align_corners=False)
