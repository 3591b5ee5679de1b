"""tune_lsd/data/splits.py and sampler.py: disjoint classes, label noise, m-per-class batches."""

from __future__ import annotations

import numpy as np
import pytest

from tune_lsd.config import DataConfig
from tune_lsd.data.datasets import DatasetError, LabelledImages, load_dataset
from tune_lsd.data.sampler import class_balanced_batches
from tune_lsd.data.splits import add_label_noise, build_splits


@pytest.fixture(scope="module")
def glyphs():
    return load_dataset("glyphs", None, 32)


def test_train_val_test_classes_are_disjoint_and_seeded(glyphs):
    config = DataConfig(val_fraction=0.25, split_seed=3)
    a = build_splits(config, seed=0, dataset=glyphs)
    b = build_splits(config, seed=0, dataset=glyphs)
    assert np.array_equal(a.val.images, b.val.images)
    c = build_splits(DataConfig(val_fraction=0.25, split_seed=4), seed=0, dataset=glyphs)
    assert not np.array_equal(a.val.images, c.val.images)

    def image_keys(part):
        return {img.tobytes() for img in part.images}

    # Labels are renumbered per split, so check disjointness on the images' source classes.
    train_classes = {tuple(np.nonzero(glyphs.train.labels == label)[0]) for label in np.unique(glyphs.train.labels)}
    assert len(train_classes) == 300
    assert a.train.num_classes == 225 and a.val.num_classes == 75 and a.test.num_classes == 200
    assert not image_keys(a.train) & image_keys(a.test)
    # every val image comes from a class with no image in train: compare per class image sets
    train_sets = [image_keys(a.train.subset(a.train.labels == label)) for label in range(a.train.num_classes)]
    for label in range(a.val.num_classes):
        val_images = image_keys(a.val.subset(a.val.labels == label))
        assert not any(val_images & s for s in train_sets)


def test_final_mode_has_no_validation_and_all_training_classes(glyphs):
    splits = build_splits(DataConfig(final=True), seed=0, dataset=glyphs)
    assert splits.val is None and splits.train.num_classes == 300


def test_label_noise_rate_on_train_only(glyphs):
    clean = build_splits(DataConfig(), seed=0, dataset=glyphs)
    noisy = build_splits(DataConfig(label_noise=0.3), seed=0, dataset=glyphs)
    changed = noisy.train.labels != clean.train.labels
    assert noisy.flipped_labels == int(changed.sum())  # every flip goes to a different class
    assert changed.mean() == pytest.approx(0.3, abs=0.03)
    assert np.array_equal(noisy.val.labels, clean.val.labels)
    assert np.array_equal(noisy.test.labels, clean.test.labels)


def test_label_noise_flips_to_other_classes_uniformly():
    data = LabelledImages(np.zeros((20000, 1, 1, 1), np.uint8), np.repeat(np.arange(4), 5000))
    noisy, flipped = add_label_noise(data, 0.5, seed=1)
    targets = noisy.labels[data.labels == 0]
    counts = np.bincount(targets[targets != 0], minlength=4)[1:]
    assert flipped == int((noisy.labels != data.labels).sum())
    assert counts.min() / counts.max() > 0.9  # uniform over the other three classes


def test_sampler_gives_m_per_class():
    labels = np.repeat(np.arange(20), 7)
    batches = class_balanced_batches(labels, m=4, batch_size=32, num_batches=5)
    assert len(batches) == 5
    for batch in batches:
        assert len(batch) == 32
        _, counts = np.unique(labels[batch], return_counts=True)
        assert len(counts) == 8 and set(counts) == {4}


def test_impossible_batches_fail_clearly(glyphs):
    with pytest.raises(DatasetError, match="multiple of data.samples_per_class"):
        build_splits(DataConfig(batch_size=30, samples_per_class=4), seed=0, dataset=glyphs)
    with pytest.raises(DatasetError, match="only 8 classes"):
        build_splits(DataConfig(max_classes=10, batch_size=64, samples_per_class=4), seed=0, dataset=glyphs)
