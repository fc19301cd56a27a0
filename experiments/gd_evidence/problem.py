"""The regression problem of the evidence experiment: scikit-learn's diabetes (442 patients,
10 features), a random split per seed into ``n_train`` training and the rest held-out
examples, features and target standardised with the training split's statistics; a network
with one hidden layer of sigmoid units on the flat parameter vector

    f(x; w) = sigmoid(x W_1 + b_1) W_2 + b_2,      w = (W_1 [10, h], b_1 [h], W_2 [h], b_2),

and the Gaussian likelihood ``y ~ N(f(x; w), NOISE^2)``. Gradient descent descends the
summed negative log-likelihood of the training split (no prior, no regularisation).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

NOISE = 1.0  # likelihood standard deviation on the standardised target


class Split(NamedTuple):
    x_train: jax.Array  # [n, 10]
    y_train: jax.Array  # [n]
    x_test: jax.Array  # [442 - n, 10]
    y_test: jax.Array


def diabetes_split(seed: int, n_train: int) -> Split:
    """A random ``n_train`` / rest split of diabetes (numpy seed ``seed``), standardised."""
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    if not 2 <= n_train < len(y):
        raise ValueError(f"n_train: must be in [2, {len(y) - 1}], got {n_train!r}")
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:n_train], perm[n_train:]
    mx, sx, my, sy = x[tr].mean(0), x[tr].std(0), y[tr].mean(), y[tr].std()
    f = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    return Split(f((x[tr] - mx) / sx), f((y[tr] - my) / sy), f((x[te] - mx) / sx),
                 f((y[te] - my) / sy))


def num_params(width: int, d_in: int = 10) -> int:
    return d_in * width + 2 * width + 1


def predict(w: jax.Array, x: jax.Array, width: int) -> jax.Array:
    """``f(x; w)`` for the flat ``w`` of :func:`num_params` entries; ``x: [n, d_in]``."""
    d_in = x.shape[-1]
    w1 = w[: d_in * width].reshape(d_in, width)
    b1 = w[d_in * width: (d_in + 1) * width]
    w2 = w[(d_in + 1) * width: (d_in + 2) * width]
    return jax.nn.sigmoid(x @ w1 + b1[None]) @ w2 + w[-1]


def log_lik(w: jax.Array, x: jax.Array, y: jax.Array, width: int) -> jax.Array:
    """Per-example Gaussian log-likelihood ``[n]``."""
    r = predict(w, x, width) - y
    return -0.5 * math.log(2 * math.pi * NOISE ** 2) - 0.5 * r ** 2 / NOISE ** 2
