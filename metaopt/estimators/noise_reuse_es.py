"""Noise-reuse evolution strategies (NRES; Li, Harrison, Sohl-Dickstein, Smith & Metz, NeurIPS
2023, arXiv 2304.12180; concurrently ES-Single, Vicol, Kolter & Swersky, ICML 2023).

One antithetic perturbation ``eps ~ N(0, sigma^2 I)`` per *episode*, reused in every truncation
of it: the halves ``s+`` / ``s-`` run the whole episode under ``theta +- eps``, so the loss
``L_k`` of truncation ``k`` depends on ``theta + eps`` alone and

    g_k = (1/B) sum_i eps_i (L+_{k,i} - L-_{k,i}) / (2 sigma^2)

is an unbiased estimate of ``d/dtheta E_eps sum_k L_k(theta + eps)`` (the smoothed objective
with one perturbation per episode) with no accumulator: where PES's weight ``xi_k`` sums ``k``
independent terms (variance growing with the truncation count), NRES's stays ``eps``. Li et al.
show its variance is no larger than PES's (and than full-episode ES's) under their assumptions.

**Episodes that end mid-truncation.** A truncation runs under one perturbation, so the new
episode begun by a reset inside truncation ``k`` runs its first steps under the old ``eps``; a
fresh ``eps'`` is drawn for the truncations after it. That episode's losses then depend on
``theta + eps`` (its first steps) and ``theta + eps'`` (the rest), two independent Gaussians, so
its later steps weigh ``xi = eps + eps'`` (Stein's identity on the pair, PES's argument) and its
steps inside truncation ``k`` weigh ``eps`` alone. Per particle the estimator keeps the current
``eps``, the sum ``xi`` of the distinct perturbations the running episode has seen, and whether
the next truncation draws a fresh one:

    eps_k = fresh draw if the previous truncation contained a reset, else eps_{k-1};
    acc = xi_{k-1} + eps_k if fresh, else xi_{k-1}          (``eps_k`` already counted);
    g_k = [ sum_{t <= r} w_t d_t acc + sum_{t > r} w_t d_t eps_k ] / (2 sigma^2),
    xi_k = eps_k if truncation k contained a reset, else acc

(``r`` the first reset, :func:`.persistent_es.split_particle_grads`). An episode aligned with
the truncations has ``xi = eps`` throughout: plain NRES. Resetting ``xi`` to 0 at the fresh
draw would drop the new episode's dependence on its first steps' ``eps`` (biased).

The first truncation draws fresh noise for every particle. Non-finite segments are masked and
desynchronized pairs restart from the positive half with ``xi = 0`` and fresh noise
(:mod:`.antithetic`). ``rank=r`` draws low-rank noise on 2-D leaves (:mod:`.lowrank_noise`);
the factors are kept in the state and reused with it. Cost per call: ``2 B T`` inner steps, no
VJPs; the benchmark counts each pair once.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import antithetic, base, lowrank_noise
from metaopt.estimators.persistent_es import split_particle_grads
from metaopt.inner import InnerProblem, InnerState

PyTree = Any


class NRESState(NamedTuple):
    """Per particle ``i`` (leading axis ``[B]``)."""

    pos: InnerState  # s+, run under theta + eps
    neg: InnerState  # s-, run under theta - eps
    xi: PyTree  # like theta [B, ...]: sum of the distinct perturbations of the running episode
    eps: PyTree  # the current perturbation (dense [B, ...] or a LowRankNoise)
    fresh: jax.Array  # bool [B]: the next truncation draws a new perturbation


def noise_reuse_es(
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
    """NRES over truncations of ``unroll_length`` steps with ``num_tasks`` antithetic particles.

    Args:
      problem: the inner problem.
      num_tasks: antithetic pairs ``B`` (particles), each with its own task and halves.
      sigma: perturbation scale, ``eps ~ N(0, sigma^2 I)`` drawn once per episode.
      unroll_length: steps ``T`` per truncation (per ``estimate`` call).
      meta_loss: ``"train"``, ``"valid"``, ``"last"`` or ``"log_train"``.
      stagger: first-episode offsets, one of ``metaopt.inner.truncation.STAGGERS``.
      axis_name: the mapped device axis the task batch is split over, or ``None``.
      rank: ``r`` for low-rank perturbations of the 2-D leaves; ``None``: full rank.

    Returns:
      An :class:`~metaopt.estimators.base.Estimator` with state :class:`NRESState`.
    """
    problem, num_tasks, sigma, meta_loss, axis_name = antithetic.check_args(
        problem, num_tasks, sigma, meta_loss, axis_name
    )
    unroll_length = base.check_positive_int("unroll_length", unroll_length)
    stagger = base.check_stagger(stagger)
    rank = lowrank_noise.check_rank(rank)
    weights = base.step_weights(meta_loss, unroll_length)

    def draw(key, theta):
        return antithetic.perturbations(key, theta, num_tasks, sigma, axis_name, rank)

    def init(key, theta):
        start = base.per_task(lambda k, n: problem.init_batch(k, theta, n, stagger), key,
                              num_tasks, axis_name)
        xi = jax.tree.map(jnp.zeros_like, base.broadcast(theta, num_tasks))
        shapes = jax.eval_shape(draw, key, theta)
        eps = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        return NRESState(start, start, xi, eps, jnp.ones((num_tasks,), bool))

    def estimate(key, theta, state):
        k_eps, k_unroll = jax.random.split(key)
        eps = base.tree_where(state.fresh, draw(k_eps, theta), state.eps)
        e = antithetic.dense(eps)
        pos, neg, po = antithetic.pair_unroll(problem, k_unroll, theta, eps, state.pos,
                                              state.neg, unroll_length, meta_loss, axis_name)
        acc = base.tree_where(state.fresh, jax.tree.map(jnp.add, state.xi, e), state.xi)
        g, xi = split_particle_grads(po.pos - po.neg, weights, po.valid, po.done, acc, e, sigma)
        grad = base.task_mean(g, axis_name)
        neg = antithetic.resync_pairs(po.desync, pos, neg)
        xi = base.tree_where(po.desync, jax.tree.map(jnp.zeros_like, xi), xi)
        fresh = jnp.any(po.done, axis=1) | po.desync
        metrics = antithetic.pair_metrics(po, weights, num_tasks, unroll_length)
        metrics["resets"] = jnp.sum(po.done).astype(jnp.float32)
        return grad, NRESState(pos, neg, xi, eps, fresh), metrics

    return base.Estimator(init=init, estimate=estimate, name="nres")
