"""A tiny problem with a 2-D theta leaf whose meta-loss is quadratic in theta (closed form).

The map ``w_{t+1} = rho w_t + x W + b`` (``w`` [3], ``x`` [4] fixed, ``theta = {"W": [4, 3],
"b": [3]}``) with validation loss ``1/2 ||w_{t+1} - c||^2`` per step: ``w_t`` is affine in
theta, so every truncation's meta-loss is quadratic in the perturbations, and an antithetic
estimate with any perturbation of covariance ``sigma^2 I`` -- full-rank Gaussian or low-rank
``sigma A B^T / sqrt(r)`` -- has the exact gradient as its expectation. Episodes restart from
``w_0 = 0``. :func:`objective` is the float64 reference: the sum over truncations of the mean
validation loss, with per-step thetas (so the exact gradient of a PES or NRES objective, whose
perturbations differ by truncation, is its gradient at equal thetas).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.inner import map_problem, truncation

RHO = 0.5
X = np.array([1.0, -0.5, 0.25, 2.0])
C = np.array([1.0, -1.0, 0.5])
THETA = {"W": jnp.asarray(np.arange(12).reshape(4, 3) / 12.0 - 0.4, jnp.float32),
         "b": jnp.asarray([0.1, -0.2, 0.3], jnp.float32)}


def problem(episode: int):
    return map_problem(
        init=lambda key, theta: ({}, jnp.zeros(3, jnp.float32)),
        batch=lambda key, cfg: {},
        phi=lambda w, th, b: RHO * w + jnp.asarray(X, w.dtype) @ th["W"] + th["b"],
        val_loss=lambda w, th, b: 0.5 * jnp.sum((w - jnp.asarray(C, w.dtype)) ** 2),
        schedule=truncation.constant(episode),
    )


def objective(thetas: list, trunc: int, episode: int) -> jax.Array:
    """``sum_k mean_{t in k} L_val,t`` with truncation ``k`` run under ``thetas[k]``."""
    w, t_ep, total = jnp.zeros(3, jnp.float64), 0, 0.0
    for th in thetas:
        losses = []
        for _ in range(trunc):
            w = RHO * w + jnp.asarray(X) @ th["W"] + th["b"]
            losses.append(0.5 * jnp.sum((w - C) ** 2))
            t_ep += 1
            if t_ep == episode:
                w, t_ep = jnp.zeros(3, jnp.float64), 0
        total = total + sum(losses) / trunc
    return total


def exact_grad(num_truncations: int, trunc: int, episode: int) -> dict:
    """The float64 gradient of :func:`objective` at ``thetas[k] = THETA`` for all ``k``."""
    with jax.enable_x64(True):
        theta = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), THETA)
        g = jax.grad(lambda th: objective([th] * num_truncations, trunc, episode))(theta)
        return jax.tree.map(np.asarray, g)
