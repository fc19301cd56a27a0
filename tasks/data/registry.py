"""Data sets by name: the bundled digits, or a tfds data set from a local ``data_dir``."""

from __future__ import annotations

from tasks.data.arrays import ArrayDataset
from tasks.data.digits import load_digits

BUNDLED = ("digits",)
TFDS = ("mnist", "fashion_mnist", "cifar10", "omniglot")
DATASETS = BUNDLED + TFDS


def load_dataset(name: str, data_dir: str | None = None) -> ArrayDataset:
    """Load data set ``name``: ``"digits"`` needs nothing; tfds sets need a prepared ``data_dir``.

    Raises ValueError naming ``dataset`` and the allowed values for an unknown name.
    """
    if name == "digits":
        return load_digits()
    if name in TFDS:
        from tasks.data.tfds import load_tfds

        return load_tfds(name, data_dir=data_dir)
    raise ValueError(f"dataset: unknown data set {name!r}; allowed values are {list(DATASETS)}")
