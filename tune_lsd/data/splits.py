"""Class-disjoint train / validation / test sets and training-label noise.

The no-test-leakage protocol (docs/method.md): a search trains on ``train`` classes and
selects on ``val`` classes, both carved out of the dataset's training classes; the ``test``
classes are only touched by the final retrain (``data.final = true``), which trains on all
training classes and has no validation set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tune_lsd.config import DataConfig
from tune_lsd.data.datasets import ClassSplit, DatasetError, LabelledImages, load_dataset


@dataclass
class DataSplits:
    """What one training run sees. ``val`` is None in a final retrain."""

    train: LabelledImages
    val: LabelledImages | None
    test: LabelledImages
    flipped_labels: int = 0  # how many training labels the noise changed

    @property
    def channels(self) -> int:
        return self.train.images.shape[-1]


def build_splits(config: DataConfig, seed: int, dataset: ClassSplit | None = None) -> DataSplits:
    """Load (unless given) and split a dataset as ``config`` says. Labels become 0..C-1."""
    dataset = dataset or load_dataset(config.dataset, config.root, config.stored_size, cache=config.cache)
    rng = np.random.default_rng(config.split_seed)
    train_pool = _keep_classes(dataset.train, config.max_classes, rng)
    test = relabel(_keep_classes(dataset.test, config.max_test_classes, rng))

    if config.final or config.val_fraction == 0:
        train, val = train_pool, None
    else:
        train, val = split_classes(train_pool, config.val_fraction, rng)
        val = relabel(val)
    train = relabel(train)
    train, flipped = add_label_noise(train, config.label_noise, seed)
    _check_batches(train, config)
    return DataSplits(train=train, val=val, test=test, flipped_labels=flipped)


def split_key(config: DataConfig, seed: int) -> tuple:
    """What decides a run's DataSplits: runs with equal keys can share one copy of the data."""
    return (
        config.dataset,
        config.root,
        config.stored_size,
        config.max_classes,
        config.max_test_classes,
        config.val_fraction,
        config.split_seed,
        config.final,
        config.label_noise,
        seed if config.label_noise else None,
    )


def split_classes(
    data: LabelledImages, val_fraction: float, rng: np.random.Generator
) -> tuple[LabelledImages, LabelledImages]:
    """Split by class (not by image): no class is in both parts."""
    classes = np.unique(data.labels)
    num_val = int(round(val_fraction * len(classes)))
    if num_val < 2 or len(classes) - num_val < 2:
        raise DatasetError(
            f"data.val_fraction={val_fraction} of {len(classes)} classes leaves fewer than 2 classes on one side"
        )
    val_classes = rng.choice(classes, size=num_val, replace=False)
    is_val = np.isin(data.labels, val_classes)
    return data.subset(~is_val), data.subset(is_val)


def relabel(data: LabelledImages) -> LabelledImages:
    """Map the labels present onto 0..C-1 (keeps their order)."""
    _, contiguous = np.unique(data.labels, return_inverse=True)
    return data.with_labels(contiguous.astype(np.int64))


def add_label_noise(data: LabelledImages, rate: float, seed: int) -> tuple[LabelledImages, int]:
    """Symmetric noise: each label, with probability ``rate``, becomes a uniformly drawn OTHER class."""
    if rate == 0:
        return data, 0
    rng = np.random.default_rng([seed, 7919])
    num_classes = int(data.labels.max()) + 1
    flip = rng.random(len(data)) < rate
    offsets = rng.integers(1, num_classes, size=int(flip.sum()))  # never 0: always a different class
    labels = data.labels.copy()
    labels[flip] = (labels[flip] + offsets) % num_classes
    return data.with_labels(labels), int(flip.sum())


def _keep_classes(data: LabelledImages, limit: int | None, rng: np.random.Generator) -> LabelledImages:
    classes = np.unique(data.labels)
    if limit is None or limit >= len(classes):
        return data
    return data.subset(np.isin(data.labels, rng.choice(classes, size=limit, replace=False)))


def _check_batches(train: LabelledImages, config: DataConfig) -> None:
    """The m-per-class sampler's preconditions, as clear errors instead of assertions."""
    m, batch = config.samples_per_class, config.batch_size
    if batch % m:
        raise DatasetError(f"data.batch_size={batch} must be a multiple of data.samples_per_class={m}")
    if train.num_classes * m < batch:
        raise DatasetError(
            f"data.batch_size={batch} needs {batch // m} classes of {m} samples, "
            f"but the training split has only {train.num_classes} classes"
        )
