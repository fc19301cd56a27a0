"""Persistent evolution strategies (PES; Vicol, Metz & Sohl-Dickstein 2021, arXiv 2112.13835).

An episode of ``K`` truncations unrolled with a fresh perturbation ``eps_k ~ N(0, sigma^2 I)``
in each truncation ``k`` defines the smoothed objective
``F(theta) = E_eps sum_k L_k(theta + eps_1, ..., theta + eps_k)``. Its gradient is estimated
without bias, in memory independent of ``K``, by keeping per particle the accumulated
perturbation ``xi_k = sum_{j <= k} eps_j`` and, antithetically, the inner states of the positive
and negative halves (``s+`` unrolled only under ``theta + eps_j``, ``s-`` under ``theta - eps_j``):

    g_k = (1/B) sum_i xi_{k,i} (L+_{k,i} - L-_{k,i}) / (2 sigma^2),

(the paper's eq. for antithetic PES), an unbiased estimate of ``d/dtheta E[L_k]`` because
``L_k`` depends on ``eps_1..eps_k`` only, all shifted by ``theta``.

**Episode boundaries.** ``xi`` belongs to an episode: a task reset inside truncation ``k`` at
step ``r`` (``StepOut.done``) starts a new episode whose only perturbation so far is ``eps_k``
(its fresh init and all its steps ran under ``theta +- eps_k``). So the truncation's per-step
loss differences ``d_t = v+_t - v-_t`` are split at the first reset:

    g_{k,i} = [ sum_{t <= r} w_t d_t (xi_{k-1} + eps_k) + sum_{t > r} w_t d_t eps_k ] / (2 sigma^2),
    xi_k = eps_k  if the truncation contained a reset,  else  xi_{k-1} + eps_k

(:func:`pes_particle_grads`; later resets in the same truncation also weigh with ``eps_k``).
Using ``xi_{k-1} + eps_k`` after the reset would still be unbiased in expectation but adds the
variance of unrelated old perturbations; resetting to ``0`` instead of ``eps_k`` is biased.

An episode segment with a non-finite loss is masked; a pair whose halves desynchronize is
masked from that segment on and restarts from its positive half (copied into the negative
one) with ``xi = 0`` (:mod:`.antithetic`). The variance of PES grows with the number of
truncations per episode (the paper, Sec. 5). Cost per call: ``2 B T`` inner steps, no VJPs;
the benchmark counts each pair once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import antithetic, base, lowrank_noise
from metaopt.inner import InnerProblem, InnerState

PyTree = Any


class PESState(NamedTuple):
    """Per particle ``i`` (leading axis ``[B]``): the two halves and the accumulated ``xi``."""

    pos: InnerState  # s+, unrolled under theta + eps_j
    neg: InnerState  # s-, unrolled under theta - eps_j
    xi: PyTree  # like theta with a leading [B]: sum of eps_j since the current episode began


def pes_particle_grads(
    diff: jax.Array,
    weights: jax.Array,
    valid: jax.Array,
    done: jax.Array,
    xi: PyTree,
    eps: PyTree,
    sigma: float,
) -> tuple[PyTree, PyTree]:
    """Reset-aware per-particle PES terms.

    Args:
      diff: ``v+_t - v-_t`` per step, ``[B, T]``.
      weights: meta-loss weights ``w_t``, ``[T]``.
      valid: ``bool [B, T]``, steps that count (masked ones contribute nothing, NaN-safe).
      done: ``bool [B, T]``, the episode ended at step ``t`` (the reset follows it).
      xi: accumulated perturbation before this truncation, ``[B, ...]`` like ``theta``.
      eps: this truncation's perturbation, ``[B, ...]``.
      sigma: the perturbation scale.

    Returns:
      ``(g [B, ...], xi_new [B, ...])``: each particle's gradient estimate (average over ``B``
      for the PES gradient) and the accumulator for the next truncation.
    """
    acc = jax.tree.map(lambda x, e: x + e, xi, eps)
    return split_particle_grads(diff, weights, valid, done, acc, eps, sigma)


def split_particle_grads(diff, weights, valid, done, acc, eps, sigma: float):
    """:func:`pes_particle_grads` given the accumulated perturbation ``acc`` of the episode
    running at the truncation's start (this truncation's ``eps`` included): steps up to the
    first reset weigh ``acc``, later ones ``eps``; returns ``(g, acc or eps after a reset)``."""
    before = base.first_episode(done)  # steps of the episode that was running at the start
    pre = base.weighted(diff, weights, valid & before)  # [B]
    post = base.weighted(diff, weights, valid & ~before)  # [B]
    reset = jnp.any(done, axis=1)  # [B]
    scale = 1.0 / (2.0 * sigma**2)
    g = jax.tree.map(lambda a, e: a + e, base.scale_rows(pre * scale, acc),
                     base.scale_rows(post * scale, eps))
    return g, base.tree_where(reset, eps, acc)


def pes(
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
    """PES over truncations of ``unroll_length`` steps with ``num_tasks`` antithetic particles.

    Args:
      problem: the inner problem.
      num_tasks: antithetic pairs ``B`` (particles), each with its own task and halves.
      sigma: perturbation scale, a fresh ``eps ~ N(0, sigma^2 I)`` per particle and truncation.
      unroll_length: steps ``T`` per truncation (per ``estimate`` call).
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      stagger: first-episode offsets, one of ``metaopt.inner.truncation.STAGGERS``.
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).
      rank: ``r`` for low-rank perturbations of the 2-D leaves (:mod:`.lowrank_noise`;
        ``xi`` stays exact: the materialized low-rank terms are summed); ``None``: full rank.

    Returns:
      An :class:`~metaopt.estimators.base.Estimator` with state :class:`PESState`.
    """
    problem, num_tasks, sigma, meta_loss, axis_name = antithetic.check_args(
        problem, num_tasks, sigma, meta_loss, axis_name
    )
    unroll_length = base.check_positive_int("unroll_length", unroll_length)
    stagger = base.check_stagger(stagger)
    rank = lowrank_noise.check_rank(rank)
    weights = base.step_weights(meta_loss, unroll_length)

    def init(key, theta):
        draw = lambda k, n: problem.init_batch(k, theta, n, stagger)
        start = base.per_task(draw, key, num_tasks, axis_name)
        xi = jax.tree.map(jnp.zeros_like, base.broadcast(theta, num_tasks))
        return PESState(start, start, xi)

    def estimate(key, theta, state):
        k_eps, k_unroll = jax.random.split(key)
        eps = antithetic.perturbations(k_eps, theta, num_tasks, sigma, axis_name, rank)
        pos, neg, po = antithetic.pair_unroll(problem, k_unroll, theta, eps, state.pos,
                                              state.neg, unroll_length, meta_loss, axis_name)
        g, xi = pes_particle_grads(po.pos - po.neg, weights, po.valid, po.done, state.xi,
                                   antithetic.dense(eps), sigma)
        grad = base.task_mean(g, axis_name)
        neg = antithetic.resync_pairs(po.desync, pos, neg)
        xi = base.tree_where(po.desync, jax.tree.map(jnp.zeros_like, xi), xi)
        metrics = antithetic.pair_metrics(po, weights, num_tasks, unroll_length)
        metrics["resets"] = jnp.sum(po.done).astype(jnp.float32)
        return grad, PESState(pos, neg, xi), metrics

    return base.Estimator(init=init, estimate=estimate, name="pes")
