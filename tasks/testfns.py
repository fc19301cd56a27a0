"""Classic non-convex 2-D test functions as deterministic tasks (a batch is empty).

======================  ===============================================  ================  =======
name                    f(x, y)                                          minimum at        f there
======================  ===============================================  ================  =======
``rosenbrock``          ``(1 - x)^2 + 100 (y - x^2)^2``                  ``(1, 1)``        0
``beale``               ``(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2``       ``(3, 0.5)``      0
                        ``+ (2.625 - x + xy^3)^2``
``himmelblau``          ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``           ``(3, 2)`` (and   0
                                                                         three others)
======================  ===============================================  ================  =======

``init(key)`` draws the start uniformly from the function's ``init_box`` (away from the
minima); the loss is the function value, the same on every split.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, check_split


class TestFunction(NamedTuple):
    """A 2-D function, one of its global minimisers, and the box starts are drawn from."""

    fn: Callable[[jax.Array], jax.Array]
    minimum: tuple[float, float]
    init_box: tuple[tuple[float, float], tuple[float, float]]  # ((x_lo, x_hi), (y_lo, y_hi))


def _rosenbrock(w):
    x, y = w[0], w[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def _beale(w):
    x, y = w[0], w[1]
    return ((1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2
            + (2.625 - x + x * y**3) ** 2)


def _himmelblau(w):
    x, y = w[0], w[1]
    return (x**2 + y - 11.0) ** 2 + (x + y**2 - 7.0) ** 2


TEST_FUNCTIONS: dict[str, TestFunction] = {
    "rosenbrock": TestFunction(_rosenbrock, (1.0, 1.0), ((-2.0, -1.0), (0.5, 2.5))),
    "beale": TestFunction(_beale, (3.0, 0.5), ((-1.5, 0.0), (-1.5, 1.5))),
    "himmelblau": TestFunction(_himmelblau, (3.0, 2.0), ((-1.0, 1.0), (-1.0, 1.0))),
}


def test_function(function: str = "rosenbrock") -> Task:
    """The 2-D test function ``function`` (module docstring) as a deterministic :class:`Task`."""
    validate.one_of("function", function, TEST_FUNCTIONS)
    spec = TEST_FUNCTIONS[function]
    lo = jnp.array([spec.init_box[0][0], spec.init_box[1][0]], jnp.float32)
    hi = jnp.array([spec.init_box[0][1], spec.init_box[1][1]], jnp.float32)

    def init(key):
        return jax.random.uniform(key, (2,), minval=lo, maxval=hi)

    def loss(w, batch, hparams=None):
        return spec.fn(w)

    def batch(key, split):
        check_split(split)
        return {}

    return Task(init=init, loss=loss, batch=batch, name=function)


test_function.__test__ = False  # not a pytest test (the name starts with "test")
TestFunction.__test__ = False
