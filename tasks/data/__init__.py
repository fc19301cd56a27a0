"""Data sets, loaded once at the edge and then closed over as device arrays."""

from metaopt.tasks.data.arrays import ArrayDataset, sample_indices, take_batch
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS", "ArrayDataset", "load_dataset", "load_digits", "sample_indices", "take_batch",
]
