"""m-per-class batches (pytorch-metric-learning's MPerClassSampler) as index arrays."""

from __future__ import annotations

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler


def class_balanced_batches(labels: np.ndarray, m: int, batch_size: int, num_batches: int) -> list[np.ndarray]:
    """``num_batches`` batches of ``batch_size`` indices, ``m`` per class, ``batch_size // m`` classes.

    The sampler draws from NumPy's global RNG, which the engine reseeds at every epoch start.
    """
    sampler = MPerClassSampler(labels, m=m, batch_size=batch_size, length_before_new_iter=batch_size * num_batches)
    indices = np.fromiter(iter(sampler), dtype=np.int64, count=len(sampler))
    return list(indices.reshape(num_batches, batch_size))
