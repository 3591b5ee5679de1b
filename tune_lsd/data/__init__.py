"""Datasets held in memory as uint8 arrays, class-disjoint splits, samplers and transforms."""

from tune_lsd.data.datasets import ClassSplit, DatasetError, LabelledImages, load_dataset
from tune_lsd.data.splits import DataSplits, build_splits

__all__ = ["ClassSplit", "DataSplits", "DatasetError", "LabelledImages", "build_splits", "load_dataset"]
