"""Evidence from the entropy of gradient descent (Duvenaud, Maclaurin & Adams 2016, "Early
stopping as nonparametric variational inference"; seed 000).

Gradient descent ``w_{t+1} = w_t - eta grad L(w_t)`` maps an initial distribution ``q_0``
(here ``N(0, s^2 I)`` over the ``D`` flat parameters) to ``q_t``; the map's Jacobian is
``I - eta H(w_t)``, so for a bijective step the entropy changes by

    S(q_{t+1}) - S(q_t) = E_{q_t} log |det(I - eta H(w_t))|
                        ~ E_{q_t} [ -eta Tr H - eta^2 Tr H^2 / 2 ]               (1)

(second-order Taylor of ``log det(I - A) = -sum_k Tr A^k / k``; exact value
:func:`exact_entropy_change`). The traces come from Hutchinson's estimator with Rademacher
probes ``v`` (:func:`hutchinson_traces`): ``E v^T H v = Tr H`` and ``E |H v|^2 = Tr H^2``,
one Hessian-vector product per probe (forward-over-reverse, :func:`hvp`). The expectation over
``q_t`` is the mean over an ensemble of ``r`` runs. With ``S(q_0)`` the Gaussian entropy
``D/2 (1 + log 2 pi) + D log s`` (:func:`gaussian_entropy`), the log-evidence estimate after
``t`` steps is

    log p(Y) ~ (1/r) sum_g log p(Y | w_t^g) + S(q_0) + sum_{b<t} (1/r) sum_g dS_b^g     (2)

and, adding ``(1/r) sum_g log p(w_t^g)`` for a prior ``p``, the variational lower bound
``E_q[log p(Y, w)] + S(q)`` (exact in expectation when the steps are bijective and (1)'s
remainder is negligible). (2) rises while the ensemble concentrates on good fits and falls
when GD keeps shrinking its volume to fit noise: the paper uses its peak as an early-stopping
rule. :func:`gd_entropy_run` is one run of plain gradient descent with the estimate of (1)
at every step (the formula is for plain GD: other optimizers have other Jacobians).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp


def hvp(loss: Callable[[jax.Array], jax.Array], w: jax.Array, v: jax.Array) -> jax.Array:
    """``H(w) v`` for a scalar ``loss`` of the flat vector ``w`` (forward over reverse)."""
    return jax.jvp(jax.grad(loss), (w,), (v,))[1]


def hutchinson_traces(hvp_fn: Callable[[jax.Array], jax.Array], key: jax.Array, dim: int,
                      num_probes: int = 1, dtype=jnp.float32) -> tuple[jax.Array, jax.Array]:
    """Unbiased estimates of ``(Tr H, Tr H^2)`` from ``num_probes`` Rademacher probes:
    ``mean_i v_i^T H v_i`` and ``mean_i |H v_i|^2`` (``H`` symmetric), where ``hvp_fn(v) = H v``
    for ``v: [dim]``. Variance of the first: ``2 sum_{i != j} H_ij^2 / num_probes``."""
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 1:
        raise ValueError(f"num_probes: must be a positive integer, got {num_probes!r}")
    v = jax.random.rademacher(key, (num_probes, dim), dtype)
    hv = jax.vmap(hvp_fn)(v)
    return jnp.mean(jnp.sum(v * hv, -1)), jnp.mean(jnp.sum(hv * hv, -1))


def entropy_change(lr, tr_h, tr_h2):
    """Second-order estimate (1) of ``log |det(I - lr H)|``: ``-lr Tr H - lr^2 Tr H^2 / 2``."""
    return -lr * tr_h - 0.5 * lr ** 2 * tr_h2


def exact_entropy_change(hessian: jax.Array, lr) -> jax.Array:
    """``log |det(I - lr H)|`` of the gradient step's Jacobian (dense ``H: [D, D]``)."""
    eye = jnp.eye(hessian.shape[0], dtype=hessian.dtype)
    return jnp.linalg.slogdet(eye - lr * hessian)[1]


def gaussian_entropy(dim: int, std) -> jax.Array:
    """Entropy of ``N(0, std^2 I_dim)``: ``dim/2 (1 + log 2 pi) + dim log std``."""
    return 0.5 * dim * (1.0 + math.log(2 * math.pi)) + dim * jnp.log(std)


def gaussian_log_prior(w: jax.Array, std) -> jax.Array:
    """``log N(w; 0, std^2 I)`` of the flat vector ``w``."""
    return (-0.5 * jnp.sum(w ** 2) / std ** 2
            - w.size * (jnp.log(std) + 0.5 * math.log(2 * math.pi)))


class EntropyTrace(NamedTuple):
    """Per step ``t = 0 .. T-1`` (before the ``t``-th update; leading axis ``[T]``)."""

    loss: jax.Array  # L(w_t), the objective GD descends
    delta_entropy: jax.Array  # estimate (1) of log|det(I - lr H(w_t))|
    metrics: dict  # metrics_fn(w_t)
    final: jax.Array  # [D] w_T


def gd_entropy_run(loss: Callable[[jax.Array], jax.Array], w0: jax.Array, key: jax.Array, *,
                   lr: float, steps: int, num_probes: int = 1,
                   metrics_fn: Callable[[jax.Array], dict] | None = None) -> EntropyTrace:
    """``steps`` steps of ``w <- w - lr grad loss(w)`` from the flat ``w0``, with the
    Hutchinson estimate of each step's entropy change (one ``key`` split per step).
    ``metrics_fn(w)`` (e.g. held-out log-likelihood) is recorded before each step; the
    cumulative sum of ``delta_entropy`` up to (excluding) step ``t`` is ``S(q_t) - S(q_0)``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: must be a positive integer, got {steps!r}")
    if not lr > 0:
        raise ValueError(f"lr: must be positive, got {lr!r}")
    metrics_fn = metrics_fn or (lambda w: {})
    value_and_grad = jax.value_and_grad(loss)

    def body(w, k):
        value, g = value_and_grad(w)
        tr_h, tr_h2 = hutchinson_traces(lambda v: hvp(loss, w, v), k, w.size, num_probes,
                                        w.dtype)
        out = (value, entropy_change(lr, tr_h, tr_h2), metrics_fn(w))
        return w - lr * g, out

    w_final, (values, d_s, metrics) = jax.lax.scan(body, w0, jax.random.split(key, steps))
    return EntropyTrace(loss=values, delta_entropy=d_s, metrics=metrics, final=w_final)
