"""scikit-learn's bundled digits: 1,797 8x8 grey images of 10 classes, no network needed.

The fixed split (seed 0, stratified) is about 60% train (1,079), 20% valid (359), 20% test (359).
Pixels are scaled from 0..16 to [0, 1]; images have shape ``[8, 8, 1]``.
"""

from __future__ import annotations

import functools

import numpy as np

from metaopt.tasks.data.arrays import ArrayDataset, split_arrays

DIGITS_SPLIT_SEED = 0


@functools.cache
def _load_digits_numpy() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits as _sk_load_digits

    d = _sk_load_digits()
    x = (d.images.astype(np.float32) / 16.0)[..., None]
    return x, d.target.astype(np.int32)


def load_digits() -> ArrayDataset:
    """The digits data set with its fixed train / valid / test split, as numpy arrays."""
    x, y = _load_digits_numpy()
    return ArrayDataset(
        splits=split_arrays(x, y, (0.2, 0.2), DIGITS_SPLIT_SEED), num_classes=10, name="digits"
    )
