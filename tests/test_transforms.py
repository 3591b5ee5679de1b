"""tune_lsd/data/transforms.py: the batched crop is a real crop, flips mirror, eval resizes."""

from __future__ import annotations

import numpy as np
import torch

from tune_lsd.data.transforms import random_resized_crop, resize, resolve_augment, to_tensor


def ramp_batch(n=4, size=16):
    x = torch.arange(size, dtype=torch.float32).repeat(size, 1)  # value = column index
    return x.expand(n, 1, size, size).clone()


def test_full_crop_is_identity_and_flip_mirrors():
    batch = ramp_batch()
    same = random_resized_crop(batch, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0))
    assert torch.allclose(same, batch, atol=1e-4)
    generator = torch.Generator().manual_seed(0)
    flipped = random_resized_crop(batch, 16, scale=(1.0, 1.0), ratio=(1.0, 1.0), flip=True, generator=generator)
    mirrored = [torch.allclose(f, b.flip(-1), atol=1e-4) for f, b in zip(flipped, batch)]
    unchanged = [torch.allclose(f, b, atol=1e-4) for f, b in zip(flipped, batch)]
    assert all(m or u for m, u in zip(mirrored, unchanged))


def test_crops_differ_per_image_and_stay_inside():
    batch = ramp_batch(n=8)
    out = random_resized_crop(batch, 16, scale=(0.3, 0.5), generator=torch.Generator().manual_seed(1))
    assert out.shape == (8, 1, 16, 16)
    spans = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    assert (spans < 15 * 0.8).all()  # zoomed in: fewer source columns than the full width
    assert out.min() >= 0 and out.max() <= 15  # sampled inside the image
    assert len({round(v, 3) for v in out[:, 0, 0, 0].tolist()}) > 1  # each image its own crop


def test_to_tensor_and_resize():
    images = np.full((2, 8, 8, 3), 255, np.uint8)
    batch = to_tensor(images, torch.device("cpu"))
    assert batch.shape == (2, 3, 8, 8) and torch.allclose(batch, torch.ones_like(batch))
    assert resize(batch, 4).shape == (2, 3, 4, 4)
    assert resolve_augment("auto", "glyphs") == "crop" and resolve_augment("auto", "cub") == "crop_flip"
