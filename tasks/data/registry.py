"""Data sets by name: the bundled digits, a tfds set from a local ``data_dir``, or a small
scikit-learn set (bundled or generated with a fixed seed, :mod:`tasks.sklearn_data`)."""

from __future__ import annotations

from metaopt.tasks.data.arrays import ArrayDataset
from metaopt.tasks.data.digits import load_digits

BUNDLED = ("digits",)
TFDS = ("mnist", "fashion_mnist", "cifar10", "omniglot")
SKLEARN = ("iris", "wine", "breast_cancer", "sk_classification", "sk_regression")  # offline
DATASETS = BUNDLED + TFDS + SKLEARN


def load_dataset(name: str, data_dir: str | None = None, **tfds_options) -> ArrayDataset:
    """Load data set ``name``: ``"digits"`` needs nothing; tfds sets need a prepared ``data_dir``.

    ``tfds_options`` go to :func:`tasks.data.tfds.load_tfds` (``max_examples_per_split``,
    ``omniglot_size``, ...). Raises ValueError naming ``dataset`` and the allowed values for
    an unknown name.
    """
    if name == "digits":
        if tfds_options:
            raise ValueError(f"dataset: options {sorted(tfds_options)} apply to tfds data sets "
                             f"only, not to 'digits'")
        return load_digits()
    if name in SKLEARN:  # tasks/sklearn_data.py
        if tfds_options:
            raise ValueError(f"dataset: options {sorted(tfds_options)} apply to tfds data sets "
                             f"only, not to {name!r}")
        from metaopt.tasks.sklearn_data import load_sklearn

        return load_sklearn(name)
    if name in TFDS:
        from metaopt.tasks.data.tfds import load_tfds

        return load_tfds(name, data_dir=data_dir, **tfds_options)
    raise ValueError(f"dataset: unknown data set {name!r}; allowed values are {list(DATASETS)}")
