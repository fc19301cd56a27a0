"""Functions drawn from a Gaussian-process prior on the unit box (Chen et al. 2017's training set).

"Learning to learn without gradient descent by gradient descent" (Chen et al., ICML 2017)
meta-trains its black-box optimizers on samples ``f ~ GP(0, k)``. Here a sample is a random
Fourier-feature (RFF) function (Rahimi & Recht 2007) of the RBF kernel
``k(x, x') = sigma^2 exp(-||x - x'||^2 / (2 l^2))``:

    f(x) = sigma sqrt(2 / M) sum_m a_m cos(omega_m . x / l + b_m),        x in [0, 1]^d,
    omega_m ~ N(0, I_d),   b_m ~ U(0, 2 pi),   a_m ~ N(0, 1),   m = 1..M,

so ``E f(x) = 0`` and ``Cov(f(x), f(x')) = sigma^2 E[cos(omega.(x - x')/l)] = k(x, x')`` exactly
in expectation over the features (for finite ``M`` the function is a degenerate GP with the
same mean and covariance). Unlike exact GP sampling (a Cholesky over the query points) an RFF
sample is an explicit, cheap, smooth function: every ``f(x_t)`` costs ``O(M d)`` and is
differentiable in ``x``, which the meta-gradient through the optimizer's queries needs.

Each task draws its own length scale, ``log l ~ U(log l_lo, log l_hi)`` (``lengthscale``),
and uses ``sigma = 1``. A task's ``init(key)`` is a uniform point of the box (the first,
random query); its loss is ``f`` (a batch is empty, the same on every split).

Shapes: config ``omega [M, d]``, ``phase [M]``, ``weight [M]``, ``lengthscale []``; ``x [d]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, TaskFamily, check_split
from metaopt.tasks.family_common import check_range, log_uniform


class GPFunctionConfig(NamedTuple):
    """One RFF sample: ``omega [M, d]``, ``phase [M]``, ``weight [M]``, ``lengthscale []``."""

    omega: jax.Array
    phase: jax.Array
    weight: jax.Array
    lengthscale: jax.Array


def gp_value(cfg: GPFunctionConfig, x: jax.Array) -> jax.Array:
    """``f(x)`` of the sample ``cfg`` (module docstring) at ``x [..., d]`` -> ``[...]``."""
    m = cfg.weight.shape[-1]
    z = x @ cfg.omega / cfg.lengthscale
    z = z + cfg.phase.reshape((1,) * (z.ndim - 1) + cfg.phase.shape)
    return math.sqrt(2.0 / m) * jnp.cos(z) @ cfg.weight


def sample_gp_config(key: jax.Array, dim: int, num_features: int,
                     lengthscale: tuple[float, float]) -> GPFunctionConfig:
    """Draw one RFF sample of the RBF-kernel GP prior (module docstring)."""
    k_w, k_b, k_a, k_l = jax.random.split(key, 4)
    return GPFunctionConfig(
        omega=jax.random.normal(k_w, (dim, num_features), jnp.float32),
        phase=jax.random.uniform(k_b, (num_features,), jnp.float32, 0.0, 2.0 * math.pi),
        weight=jax.random.normal(k_a, (num_features,), jnp.float32),
        lengthscale=jnp.exp(log_uniform(jax.random.uniform(k_l, (), jnp.float32), *lengthscale)),
    )


def gp_functions(dim: int = 2, num_features: int = 256,
                 lengthscale: tuple[float, float] = (0.2, 0.5)) -> TaskFamily:
    """Functions ``f ~ GP(0, RBF(l))`` on ``[0, 1]^dim`` as a :class:`TaskFamily` (module
    docstring); ``lengthscale = (lo, hi)`` is the range of the per-task log-uniform length scale.
    """
    dim = validate.positive_int("dim", dim)
    num_features = validate.positive_int("num_features", num_features)
    lengthscale = check_range("lengthscale", lengthscale, validate.positive_float)

    def sample(key):
        return sample_gp_config(key, dim, num_features, lengthscale)

    def task(cfg: GPFunctionConfig) -> Task:
        def init(key):
            return jax.random.uniform(key, (dim,), jnp.float32)

        def loss(x, batch, hparams=None):
            return gp_value(cfg, x)

        def batch(key, split):
            check_split(split)
            return {}

        return Task(init=init, loss=loss, batch=batch, name=f"gp_functions_{dim}d")

    return TaskFamily(sample=sample, task=task, name=f"gp_functions_{dim}d")
