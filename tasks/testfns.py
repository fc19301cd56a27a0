"""Classic non-convex test functions as deterministic tasks (a batch is empty).

======================  ===============================================  ================  =======
name                    f(x, y)                                          minimum at        f there
======================  ===============================================  ================  =======
``rosenbrock``          ``(1 - x)^2 + 100 (y - x^2)^2``                  ``(1, 1)``        0
``beale``               ``(1.5 - x + xy)^2 + (2.25 - x + xy^2)^2``       ``(3, 0.5)``      0
                        ``+ (2.625 - x + xy^3)^2``
``himmelblau``          ``(x^2 + y - 11)^2 + (x + y^2 - 7)^2``           ``(3, 2)`` (and   0
                                                                         three others)
``branin``              ``(y - 5.1 x^2 / (4 pi^2) + 5 x / pi - 6)^2``    ``(pi, 2.275)``   0.397887
                        ``+ 10 (1 - 1 / (8 pi)) cos x + 10``             (and two others)  (5/4pi)
``hartmann3``           ``-sum_i alpha_i exp(-sum_j A_ij (x_j - P_ij)^2)``  (3-D)          -3.86278
``hartmann6``           the same with the 6-D ``A``, ``P``                  (6-D)          -3.32237
======================  ===============================================  ================  =======

Branin (Dixon & Szegoe 1978) is searched on ``[-5, 10] x [0, 15]``, where its three global
minimisers are ``(-pi, 12.275)``, ``(pi, 2.275)`` and ``(3 pi, 2.475)``; Hartmann-3 and -6
(Hartmann 1972; constants and minima of Surjanovic & Bingham's virtual library) on the unit
cube, minimised at ``HARTMANN3_MIN`` and ``HARTMANN6_MIN``. These are the global-optimization
benchmarks of Chen et al. (2017). ``minimum`` is one global minimiser, ``f_min`` the global
minimum and ``domain`` the search box black-box optimizers use (:func:`on_unit_box` maps it to
``[0, 1]^d``).

``init(key)`` draws the start uniformly from the function's ``init_box`` (away from the
minima); the loss is the function value, the same on every split.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, check_split

# global minimisers (Surjanovic & Bingham's, refined to 1e-7 by L-BFGS in float64)
HARTMANN3_MIN = (0.11458888, 0.55564889, 0.85254698)
HARTMANN6_MIN = (0.20168951, 0.15001069, 0.47687397, 0.27533243, 0.31165162, 0.65730054)


class TestFunction(NamedTuple):
    """A function of ``d`` inputs, one of its global minimisers, the box starts are drawn from,
    its global minimum value and its search domain (``None``: ``init_box``)."""

    fn: Callable[[jax.Array], jax.Array]
    minimum: tuple[float, ...]
    init_box: tuple[tuple[float, float], ...]  # ((x_lo, x_hi), (y_lo, y_hi), ...)
    f_min: float = 0.0
    domain: tuple[tuple[float, float], ...] | None = None


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


def _branin(w):
    x, y = w[0], w[1]
    b, c, t = 5.1 / (4.0 * math.pi**2), 5.0 / math.pi, 1.0 / (8.0 * math.pi)
    return (y - b * x**2 + c * x - 6.0) ** 2 + 10.0 * (1.0 - t) * jnp.cos(x) + 10.0


_H_ALPHA = (1.0, 1.2, 3.0, 3.2)
_H3_A = ((3.0, 10.0, 30.0), (0.1, 10.0, 35.0), (3.0, 10.0, 30.0), (0.1, 10.0, 35.0))
_H3_P = ((3689, 1170, 2673), (4699, 4387, 7470), (1091, 8732, 5547), (381, 5743, 8828))
_H6_A = ((10.0, 3.0, 17.0, 3.5, 1.7, 8.0), (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
         (3.0, 3.5, 1.7, 10.0, 17.0, 8.0), (17.0, 8.0, 0.05, 10.0, 0.1, 14.0))
_H6_P = ((1312, 1696, 5569, 124, 8283, 5886), (2329, 4135, 8307, 3736, 1004, 9991),
         (2348, 1451, 3522, 2883, 3047, 6650), (4047, 8828, 8732, 5743, 1091, 381))


def _hartmann(a, p):
    def fn(w):
        aa = jnp.asarray(a, w.dtype)
        pp = jnp.asarray(p, w.dtype) * 1e-4
        inner = jnp.sum(aa * (w[None, :] - pp) ** 2, axis=-1)  # [4]
        return -jnp.sum(jnp.asarray(_H_ALPHA, w.dtype) * jnp.exp(-inner))

    return fn


TEST_FUNCTIONS: dict[str, TestFunction] = {
    "rosenbrock": TestFunction(_rosenbrock, (1.0, 1.0), ((-2.0, -1.0), (0.5, 2.5))),
    "beale": TestFunction(_beale, (3.0, 0.5), ((-1.5, 0.0), (-1.5, 1.5))),
    "himmelblau": TestFunction(_himmelblau, (3.0, 2.0), ((-1.0, 1.0), (-1.0, 1.0))),
    "branin": TestFunction(_branin, (math.pi, 2.275), ((0.0, 2.0), (10.0, 15.0)),
                           5.0 / (4.0 * math.pi), ((-5.0, 10.0), (0.0, 15.0))),
    "hartmann3": TestFunction(_hartmann(_H3_A, _H3_P), HARTMANN3_MIN,
                              ((0.6, 1.0), (0.0, 0.3), (0.0, 0.3)),
                              -3.86278, ((0.0, 1.0),) * 3),
    "hartmann6": TestFunction(_hartmann(_H6_A, _H6_P), HARTMANN6_MIN, ((0.6, 1.0),) * 6,
                              -3.32237, ((0.0, 1.0),) * 6),
}


def on_unit_box(spec: TestFunction) -> Callable[[jax.Array], jax.Array]:
    """``u -> spec.fn(lo + (hi - lo) u)`` for ``u in [0, 1]^d`` (``[lo, hi]`` = its domain)."""
    box = spec.domain if spec.domain is not None else spec.init_box
    lo = jnp.asarray([b[0] for b in box], jnp.float32)
    hi = jnp.asarray([b[1] for b in box], jnp.float32)
    return lambda u: spec.fn(lo + (hi - lo) * u)


def test_function(function: str = "rosenbrock") -> Task:
    """The test function ``function`` (module docstring) as a deterministic :class:`Task`."""
    validate.one_of("function", function, TEST_FUNCTIONS)
    spec = TEST_FUNCTIONS[function]
    lo = jnp.array([b[0] for b in spec.init_box], jnp.float32)
    hi = jnp.array([b[1] for b in spec.init_box], jnp.float32)

    def init(key):
        return jax.random.uniform(key, lo.shape, minval=lo, maxval=hi)

    def loss(w, batch, hparams=None):
        return spec.fn(w)

    def batch(key, split):
        check_split(split)
        return {}

    return Task(init=init, loss=loss, batch=batch, name=function)


test_function.__test__ = False  # not a pytest test (the name starts with "test")
TestFunction.__test__ = False
