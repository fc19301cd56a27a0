"""Antithetic evolution strategies: over full episodes, and over truncations (biased).

Gaussian smoothing (Nesterov & Spokoiny 2017; Salimans et al. 2017): for
``F_sigma(theta) = E_{eps ~ N(0, sigma^2 I)} F(theta + eps)``,

    grad F_sigma(theta) = E[ eps (F(theta + eps) - F(theta - eps)) ] / (2 sigma^2),

estimated with ``B`` antithetic pairs (each pair is one task, run at ``theta +- eps_i`` with the
same keys):

    g = (1/B) sum_i eps_i (F_i(theta + eps_i) - F_i(theta - eps_i)) / (2 sigma^2).

:func:`antithetic_es` unrolls a whole episode of ``horizon`` steps from fresh tasks each call:
an unbiased estimate of the smoothed full-episode meta-gradient, needing no backprop (works
through non-differentiable or chaotic unrolls), memory independent of the horizon.

:func:`truncated_es` carries one state per pair across truncations; each call runs both halves
``T`` steps from it and continues from the positive half (so desynchronized halves need no
repair). It ignores how ``theta`` shaped the state in earlier truncations, hence is biased like
TBPTT; PES (:mod:`.persistent_es`) fixes that.

The episode segment of a pair that contains a non-finite loss is masked (:mod:`.antithetic`);
masked steps contribute 0 to ``F``. Cost per call: ``2 B T`` inner steps, no VJPs. The
benchmark counts each pair once (``B T`` task-steps).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import antithetic, base, lowrank_noise
from metaopt.inner import InnerProblem, InnerState


class TruncatedESState(NamedTuple):
    """One carried inner state per pair, ``[B, ...]``."""

    inner: InnerState


def _es_grad(po: antithetic.PairOut, mask, weights, eps, sigma: float, axis_name):
    """``mean_i eps_i (F+_i - F-_i) / (2 sigma^2)`` with ``F = sum_t w_t v_t`` over ``mask``."""
    diff = base.weighted(po.pos - po.neg, weights, mask)  # [B]
    coef = diff / (2.0 * sigma**2)
    return base.task_mean(base.scale_rows(coef, antithetic.dense(eps)), axis_name)


def antithetic_es(
    problem: InnerProblem,
    *,
    num_tasks: int,
    sigma: float,
    horizon: int | None = None,
    meta_loss: str = "valid",
    axis_name: str | None = None,
    rank: int | None = None,
) -> base.Estimator:
    """Antithetic ES over full episodes of ``horizon`` steps on ``num_tasks`` fresh pairs.

    Args:
      problem: the inner problem.
      num_tasks: antithetic pairs ``B`` per estimate (each a freshly sampled task).
      sigma: perturbation scale, ``eps ~ N(0, sigma^2 I)``.
      horizon: unrolled steps ``T``; default ``problem.schedule.max_length``. Only the first
        episode's steps count.
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).
      rank: ``r`` for low-rank perturbations of the 2-D leaves (:mod:`.lowrank_noise`);
        ``None``: full-rank Gaussian noise.
    """
    problem, num_tasks, sigma, meta_loss, axis_name = antithetic.check_args(
        problem, num_tasks, sigma, meta_loss, axis_name
    )
    rank = lowrank_noise.check_rank(rank)
    horizon = base.check_positive_int(
        "horizon", problem.schedule.max_length if horizon is None else horizon
    )
    weights = base.step_weights(meta_loss, horizon)

    def init(key, theta):
        del key, theta
        return base.NoState()

    def estimate(key, theta, state):
        k_eps, k_init, k_unroll = jax.random.split(key, 3)
        eps = antithetic.perturbations(k_eps, theta, num_tasks, sigma, axis_name, rank)
        init_keys = base.split_keys(k_init, num_tasks, axis_name)
        thetas, axes = antithetic.perturbed_axes(theta, eps)
        start = jax.vmap(problem.init, (0, base.theta_axes(axes)))(
            jnp.concatenate([init_keys, init_keys]), thetas)
        pos, neg = base.split_pairs(start, num_tasks)
        _, _, po = antithetic.pair_unroll(problem, k_unroll, theta, eps, pos, neg, horizon,
                                          meta_loss, axis_name)
        first = base.first_episode(po.done)
        grad = _es_grad(po, po.valid & first, weights, eps, sigma, axis_name)
        return grad, state, antithetic.pair_metrics(po, weights, num_tasks, horizon, first)

    return base.Estimator(init=init, estimate=estimate, name="es")


def truncated_es(
    problem: InnerProblem,
    *,
    num_tasks: int,
    sigma: float,
    unroll_length: int,
    meta_loss: str = "valid",
    stagger: str = "even",
    axis_name: str | None = None,
    rank: int | None = None,
) -> base.Estimator:
    """Antithetic ES over truncations of ``unroll_length`` steps, state carried (biased).

    Args:
      problem: the inner problem.
      num_tasks: antithetic pairs ``B``, each with one carried inner state.
      sigma: perturbation scale, a fresh ``eps ~ N(0, sigma^2 I)`` per pair and truncation.
      unroll_length: steps ``T`` per truncation.
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      stagger: first-episode offsets, one of ``metaopt.inner.truncation.STAGGERS``.
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).
      rank: ``r`` for low-rank perturbations of the 2-D leaves (:mod:`.lowrank_noise`);
        ``None``: full-rank Gaussian noise.
    """
    problem, num_tasks, sigma, meta_loss, axis_name = antithetic.check_args(
        problem, num_tasks, sigma, meta_loss, axis_name
    )
    rank = lowrank_noise.check_rank(rank)
    unroll_length = base.check_positive_int("unroll_length", unroll_length)
    stagger = base.check_stagger(stagger)
    weights = base.step_weights(meta_loss, unroll_length)

    def init(key, theta):
        draw = lambda k, n: problem.init_batch(k, theta, n, stagger)
        return TruncatedESState(base.per_task(draw, key, num_tasks, axis_name))

    def estimate(key, theta, state):
        k_eps, k_unroll = jax.random.split(key)
        eps = antithetic.perturbations(k_eps, theta, num_tasks, sigma, axis_name, rank)
        pos, _, po = antithetic.pair_unroll(problem, k_unroll, theta, eps, state.inner,
                                            state.inner, unroll_length, meta_loss, axis_name)
        grad = _es_grad(po, po.valid, weights, eps, sigma, axis_name)
        metrics = antithetic.pair_metrics(po, weights, num_tasks, unroll_length)
        return grad, TruncatedESState(pos), metrics

    return base.Estimator(init=init, estimate=estimate, name="truncated_es")
