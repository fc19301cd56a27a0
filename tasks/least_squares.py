"""Random least-squares quadratics ``f(theta) = ||W theta - y||^2`` (Andrychowicz et al. 2016).

The quadratic family of "Learning to learn by gradient descent by gradient descent" (sec. 3.1):
each task draws ``W`` [m, d] and ``y`` [m] with i.i.d. standard-normal entries (the paper's
text; its public code draws them from U[0, 1) instead), and the loss is the *unhalved* sum of
squares

    f(theta) = ||W theta - y||^2,     grad f = 2 W^T (W theta - y),     Hessian 2 W^T W,

from ``theta_0 ~ N(0, init_scale^2 I)`` (default 0.01, as in the paper's code). With
``m = d`` (the default, ``num_rows=None``) ``W`` is square and almost surely invertible, so the
minimum is 0, but ``W^T W`` is badly conditioned (the smallest singular value of a square
Gaussian matrix is O(1/sqrt(d))). The loss is deterministic: a batch is empty.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, TaskFamily, check_split


class LeastSquaresConfig(NamedTuple):
    """One task: ``w`` [m, d], ``y`` [m]."""

    w: jax.Array
    y: jax.Array


def least_squares_task(cfg: LeastSquaresConfig, init_scale: float = 0.01) -> Task:
    """The task ``||W theta - y||^2`` of one :class:`LeastSquaresConfig`."""
    dim = cfg.w.shape[-1]

    def init(key):
        return init_scale * jax.random.normal(key, (dim,))

    def loss(theta, batch, hparams=None):
        r = cfg.w @ theta - cfg.y
        return jnp.sum(r * r)

    def batch(key, split):
        check_split(split)
        return {}

    return Task(init=init, loss=loss, batch=batch, name=f"least_squares_{dim}d")


def least_squares_family(dim: int = 10, num_rows: int | None = None,
                         init_scale: float = 0.01) -> TaskFamily:
    """Tasks ``||W theta - y||^2`` with ``W`` [num_rows, dim] and ``y`` standard normal
    (``num_rows=None``: square ``W``, the paper's 10 x 10)."""
    dim = validate.positive_int("dim", dim)
    rows = dim if num_rows is None else validate.positive_int("num_rows", num_rows)
    init_scale = validate.positive_float("init_scale", init_scale)

    def sample(key):
        z = jax.random.normal(key, (rows, dim + 1))  # one draw: W and y side by side
        return LeastSquaresConfig(w=z[:, :dim], y=z[:, dim])

    return TaskFamily(sample=sample, task=lambda cfg: least_squares_task(cfg, init_scale),
                      name=f"least_squares_{dim}d")
