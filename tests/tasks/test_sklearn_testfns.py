"""Offline scikit-learn data sets (shapes, fixed splits, standardisation) and the 2-D test
functions (known minima, zero gradient there)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import tasks
from metaopt.tasks.data import load_dataset
from metaopt.tasks.testfns import TEST_FUNCTIONS

SIZES = {"iris": (150, 4, 3), "wine": (178, 13, 3), "breast_cancer": (569, 30, 2),
         "sk_classification": (2000, 20, 4), "sk_regression": (2000, 20, 0)}


@pytest.mark.parametrize("name", sorted(SIZES))
def test_sklearn_sets_split_60_20_20_with_fixed_standardised_features(name):
    n, d, classes = SIZES[name]
    data = load_dataset(name)
    assert data.num_classes == classes and data.example_shape == (d,)
    sizes = {s: data.size(s) for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == n
    assert abs(sizes["valid"] - 0.2 * n) <= classes + 1 and abs(sizes["test"] - 0.2 * n) <= 4
    x, y = data.splits["train"]
    assert x.dtype == np.float32 and np.abs(x.mean(0)).max() < 1e-4
    assert np.allclose(x.std(0), 1.0, atol=1e-3)
    if classes:
        assert y.dtype == np.int32 and set(np.unique(y)) == set(range(classes))
    else:
        assert y.dtype == np.float32 and abs(float(y.mean())) < 1e-4
    again = load_dataset(name)  # generated once with a fixed random_state: same every time
    for s in sizes:
        np.testing.assert_array_equal(again.splits[s][0], data.splits[s][0])
    rows = {s: {tuple(r) for r in data.splits[s][0]} for s in sizes}
    assert not (rows["train"] & rows["test"]) and not (rows["valid"] & rows["test"])


def test_sklearn_tasks_build_and_refuse_the_wrong_kind_of_set():
    t = tasks.make("mlp_classifier", dataset="iris", batch_size=16)
    b = t.batch(jax.random.key(0), "test")
    assert b["x"].shape == (16, 4) and np.isfinite(t.loss(t.init(jax.random.key(1)), b))
    r = tasks.make("mlp_regressor", hidden=(8,), batch_size=32)
    b = r.batch(jax.random.key(0), "valid")
    assert b["x"].shape == (32, 20) and b["y"].shape == (32,)
    with pytest.raises(ValueError, match="dataset: 'sk_regression' is not a classification"):
        tasks.make("mlp_classifier", dataset="sk_regression")
    with pytest.raises(ValueError, match="dataset: unknown value 'iris'"):
        tasks.make("mlp_regressor", dataset="iris")
    with pytest.raises(ValueError, match="batch_size: 64 is larger than the 'valid' split"):
        tasks.make("mlp_classifier", dataset="iris", batch_size=64)


@pytest.mark.parametrize("name", sorted(TEST_FUNCTIONS))
def test_test_functions_have_their_known_minimum_and_zero_gradient_there(name):
    t = tasks.make("test_function", function=name)
    spec = TEST_FUNCTIONS[name]
    w_star = jnp.asarray(spec.minimum, jnp.float32)
    b = t.batch(jax.random.key(0), "train")
    assert b == {}
    assert float(t.loss(w_star, b)) == pytest.approx(spec.f_min, abs=1e-10 if spec.f_min == 0
                                                    else 1e-5)
    np.testing.assert_allclose(jax.grad(t.loss)(w_star, b), 0.0, atol=1e-5)
    starts = jax.vmap(t.init)(jax.random.split(jax.random.key(1), 64))
    values = jax.vmap(lambda w: t.loss(w, b))(starts)
    assert starts.shape == (64, len(spec.minimum))
    assert float(values.min()) > spec.f_min + 0.1  # starts are away from minima
    assert float(t.loss(w_star + 0.1, b)) > spec.f_min
