"""Random quadratics with a controllable spectrum.

    L(w) = 1/2 (w - c)^T A (w - c),   A = Q diag(lambda) Q^T,

with ``Q`` a Haar-random rotation (QR of a Gaussian matrix, signs fixed), eigenvalues
``lambda`` log-spaced from ``max_eig / condition_number`` to ``max_eig`` (or, with
``random_spectrum=True``, log-uniform in between with both ends included), centre
``c ~ N(0, I)`` and init ``w_0 ~ N(0, init_scale^2 I)``. With ``condition_range=(k_lo, k_hi)``
each task draws its own condition number, ``log kappa ~ U(log k_lo, log k_hi)``, replacing
``condition_number`` (spectra from ``max_eig / kappa`` to ``max_eig``), so a family spreads its
tasks over conditionings (e.g. ``(1, 1e3)``). The loss is deterministic: a batch is
empty. Gradient descent has the closed form ``w_t - c = (I - eta A)^t (w_0 - c)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, TaskFamily, check_split
from metaopt.tasks.family_common import check_range, log_uniform


class QuadraticConfig(NamedTuple):
    """One quadratic: ``eigvals`` [d], ``rotation`` [d, d], ``center`` [d]."""

    eigvals: jax.Array
    rotation: jax.Array
    center: jax.Array

    def hessian(self) -> jax.Array:
        return (self.rotation * self.eigvals[None, :]) @ self.rotation.T


def random_rotation(key: jax.Array, dim: int) -> jax.Array:
    """A Haar-distributed orthogonal ``[dim, dim]`` matrix."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def quadratic_task(cfg: QuadraticConfig, init_scale: float = 1.0) -> Task:
    """The task of one :class:`QuadraticConfig`."""
    dim = cfg.center.shape[-1]

    def init(key):
        return init_scale * jax.random.normal(key, (dim,))

    def loss(w, batch, hparams=None):
        z = cfg.rotation.T @ (w - cfg.center)
        return 0.5 * jnp.sum(cfg.eigvals * z * z)

    def batch(key, split):
        check_split(split)
        return {}

    return Task(init=init, loss=loss, batch=batch, name=f"quadratic_{dim}d")


def _at_least_one(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 1:
        raise ValueError(f"{name}: must be a number >= 1, got {value!r}")
    return float(value)


def quadratic_family(
    dim: int = 10,
    condition_number: float = 10.0,
    max_eig: float = 1.0,
    random_spectrum: bool = False,
    init_scale: float = 1.0,
    condition_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """Quadratics of dimension ``dim`` whose Hessians have condition number ``condition_number``
    (or, with ``condition_range``, a per-task condition number log-uniform in that range)."""
    validate.positive_int("dim", dim)
    if not (isinstance(condition_number, int | float) and condition_number >= 1):
        raise ValueError(f"condition_number: must be a number >= 1, got {condition_number!r}")
    validate.positive_float("max_eig", max_eig)
    validate.positive_float("init_scale", init_scale)
    if condition_range is not None:
        condition_range = check_range("condition_range", condition_range, _at_least_one)
    lo, hi = math.log(max_eig / condition_number), math.log(max_eig)

    def sample(key):
        k_rot, k_c, k_eig = jax.random.split(key, 3)
        low = lo
        if condition_range is not None:
            k_eig, k_kappa = jax.random.split(k_eig)
            low = hi - log_uniform(jax.random.uniform(k_kappa), *condition_range)
        if random_spectrum and dim > 2:
            inner = jax.random.uniform(k_eig, (dim - 2,), minval=low, maxval=hi)
            logs = jnp.concatenate([jnp.stack([low, hi]).astype(inner.dtype), jnp.sort(inner)])
        else:
            logs = jnp.linspace(low, hi, dim)
        return QuadraticConfig(jnp.exp(logs), random_rotation(k_rot, dim),
                               jax.random.normal(k_c, (dim,)))

    return TaskFamily(sample=sample, task=lambda cfg: quadratic_task(cfg, init_scale),
                      name=f"quadratic_{dim}d")
