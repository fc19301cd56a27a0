"""Data sets, loaded once at the edge and then closed over as device arrays."""

from tasks.data.arrays import ArrayDataset, sample_indices, take_batch
from tasks.data.digits import load_digits
from tasks.data.registry import DATASETS, load_dataset

__all__ = [
    "DATASETS", "ArrayDataset", "load_dataset", "load_digits", "sample_indices", "take_batch",
]
