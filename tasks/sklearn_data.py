"""Small scikit-learn data sets, offline: bundled (iris, wine, breast cancer) or generated once
with a fixed ``random_state`` (``make_classification``, ``make_regression``).

Each loads into the :class:`~tasks.data.ArrayDataset` the digits use (``splits`` of float32
features ``[n, d]``, labels ``[n]``), split once with a fixed seed into 60% train / 20% valid /
20% test (stratified by class for classification). Features are standardised with the training
split's mean and standard deviation. ``sk_regression`` is a regression set: its targets are
float32, standardised likewise, and ``num_classes`` is 0; :func:`mlp_regressor` trains on it.

=================  ========  ========  ===================  =========================
name               examples  features  train / valid / test  classes
=================  ========  ========  ===================  =========================
iris               150       4         90 / 30 / 30          3
wine               178       13        106 / 36 / 36         3
breast_cancer      569       30        341 / 114 / 114       2
sk_classification  2,000     20        1,200 / 400 / 400     4 (10 informative features)
sk_regression      2,000     20        1,200 / 400 / 400     regression (10 informative)
=================  ========  ========  ===================  =========================
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from metaopt.tasks import validate
from metaopt.tasks.base import SPLITS, Task, check_split
from metaopt.tasks.data.arrays import ArrayDataset, sample_indices, split_arrays
from metaopt.tasks.models import ACTIVATIONS, MLP

SPLIT_SEED = 0
GENERATED_SEED = 0  # random_state of make_classification / make_regression
CLASSIFICATION = ("iris", "wine", "breast_cancer", "sk_classification")
REGRESSION = ("sk_regression",)
SKLEARN_DATASETS = CLASSIFICATION + REGRESSION


@functools.cache
def _raw(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    if name == "iris":
        return datasets.load_iris(return_X_y=True)
    if name == "wine":
        return datasets.load_wine(return_X_y=True)
    if name == "breast_cancer":
        return datasets.load_breast_cancer(return_X_y=True)
    if name == "sk_classification":
        return datasets.make_classification(
            n_samples=2000, n_features=20, n_informative=10, n_redundant=4, n_classes=4,
            n_clusters_per_class=2, class_sep=1.0, random_state=GENERATED_SEED)
    if name == "sk_regression":
        return datasets.make_regression(n_samples=2000, n_features=20, n_informative=10,
                                        noise=10.0, random_state=GENERATED_SEED)
    raise ValueError(f"dataset: unknown scikit-learn data set {name!r}; allowed values are "
                     f"{list(SKLEARN_DATASETS)}")


def _standardise(splits: dict, target: bool) -> dict:
    x_tr, y_tr = splits["train"]
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-8
    y_mu, y_sd = (float(y_tr.mean()), float(y_tr.std())) if target else (0.0, 1.0)
    out = {}
    for s, (x, y) in splits.items():
        y = ((y - y_mu) / y_sd).astype(np.float32) if target else y.astype(np.int32)
        out[s] = (((x - mu) / sd).astype(np.float32), y)
    return out


def _random_split(x: np.ndarray, y: np.ndarray, seed: int) -> dict:
    """60 / 20 / 20, not stratified (regression targets have no classes)."""
    idx = np.random.default_rng(seed).permutation(len(y))
    n_valid = n_test = int(round(0.2 * len(y)))
    parts = {"valid": idx[:n_valid], "test": idx[n_valid:n_valid + n_test],
             "train": idx[n_valid + n_test:]}
    return {s: (x[parts[s]], y[parts[s]]) for s in SPLITS}


def load_sklearn(name: str) -> ArrayDataset:
    """The scikit-learn data set ``name`` (module docstring), split and standardised."""
    x, y = _raw(name)
    x = np.asarray(x, np.float64)
    if name in REGRESSION:
        splits = _standardise(_random_split(x, np.asarray(y, np.float64), SPLIT_SEED), True)
        return ArrayDataset(splits=splits, num_classes=0, name=name)
    splits = _standardise(split_arrays(x, np.asarray(y), (0.2, 0.2), SPLIT_SEED), False)
    return ArrayDataset(splits=splits, num_classes=int(np.max(y)) + 1, name=name)


def mlp_regressor(
    dataset: str | ArrayDataset = "sk_regression",
    hidden: Sequence[int] = (32,),
    batch_size: int = 128,
    activation: str = "relu",
) -> Task:
    """An MLP fitting a regression data set by mean squared error: ``dataset`` is a name in
    ``REGRESSION`` or an :class:`ArrayDataset` with ``num_classes == 0`` and float targets."""
    if isinstance(dataset, str):
        dataset = load_sklearn(validate.one_of("dataset", dataset, REGRESSION))
    data = dataset
    if data.num_classes != 0:
        raise ValueError(f"dataset: {data.name!r} is a classification set; mlp_regressor needs "
                         f"a regression set, one of {list(REGRESSION)}")
    hidden = validate.positive_ints("hidden", hidden)
    validate.one_of("activation", activation, ACTIVATIONS)
    for split in SPLITS:
        validate.batch_fits("batch_size", batch_size, split, data.size(split))
    model = MLP(hidden=hidden, out=1, activation=ACTIVATIONS[activation])
    dev = {s: (jnp.asarray(x), jnp.asarray(y, jnp.float32)) for s, (x, y) in data.splits.items()}
    example = jnp.zeros((1, *data.example_shape), jnp.float32)

    def init(key):
        return model.init(key, example)["params"]

    def batch(key, split):
        x, y = dev[check_split(split)]
        idx = sample_indices(key, x.shape[0], batch_size)
        return {"x": jnp.take(x, idx, axis=0), "y": jnp.take(y, idx, axis=0)}

    def loss(params, b, hparams=None):
        pred = model.apply({"params": params}, b["x"])[:, 0]
        return jnp.mean(jnp.square(pred - b["y"]))

    widths = "-".join(str(w) for w in (data.example_shape[0], *hidden, 1))
    return Task(init=init, loss=loss, batch=batch, name=f"{data.name}_mlp_{widths}")
