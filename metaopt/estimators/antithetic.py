"""Antithetic pairs: the machinery shared by ES, truncated ES and PES.

A pair ``i`` is one task run twice, at ``theta + eps_i`` and ``theta - eps_i``, with the same
keys (same task config, init, minibatches and episode lengths), so that the loss difference
``L+ - L-`` carries only the effect of the perturbation. Both halves run as one
``unroll_batch`` of ``2B`` tasks, positive half first, so a truncation is one compiled scan.

Non-finite losses. A task that hits a non-finite loss is reset by the inner problem; the steps
of that episode just before the blow-up typically have finite but astronomically large losses.
So the pair's whole *episode segment* containing the event (the steps since the previous reset
inside this unroll, up to and including the non-finite step) is masked (:func:`pair_mask`); the
fresh episodes after it still count. If the halves desynchronize (one half resets and the other
does not, e.g. only one blew up), the pair's steps from the start of that segment on are masked
and the pair restarts from its positive half: the negative half becomes a copy of it
(:func:`resync_pairs`; PES also zeroes the pair's accumulator, treating the copied state as a
new episode's start, whose dependence on earlier perturbations is dropped, as at a TBPTT
truncation). Copying rather than sampling a fresh task keeps a second task initialization out
of the compiled truncation. Masked and restarted pairs are counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import base, lowrank_noise
from metaopt.inner import InnerProblem, InnerState, StepOut

PyTree = Any


class PairOut(NamedTuple):
    """Per-step results of a pair unroll, each ``[B, n]``."""

    pos: jax.Array  # values (per-step losses) of the positive half
    neg: jax.Array  # values of the negative half
    valid: jax.Array  # bool: the step counts (comparable, in an episode segment with no blow-up)
    desync: jax.Array  # bool [B]: the halves went out of step (restart from the positive one)
    done: jax.Array  # bool: the (positive half's) episode ended at this step
    nonfinite: jax.Array  # bool: a half hit a non-finite loss here


def check_args(problem, num_tasks, sigma, meta_loss, axis_name):
    """Validate the arguments every antithetic estimator takes."""
    problem = base.check_problem(problem)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    sigma = base.check_positive_float("sigma", sigma)
    meta_loss = base.check_meta_loss(meta_loss, problem)
    return problem, num_tasks, sigma, meta_loss, base.check_axis_name(axis_name)


def perturbations(key, theta, num_pairs: int, sigma: float, axis_name: str | None,
                  rank: int | None = None) -> PyTree:
    """``eps_i ~ N(0, sigma^2 I)`` per pair, ``[B, ...]`` like ``theta`` (see ``per_task``);
    with ``rank``, low-rank noise on 2-D leaves (a :class:`.lowrank_noise.LowRankNoise`)."""
    if rank is not None:
        return lowrank_noise.perturbations(key, theta, num_pairs, sigma, rank, axis_name)
    draw = lambda k, n: base.gaussian_like(k, theta, n, sigma)
    return base.per_task(draw, key, num_pairs, axis_name)


def dense(eps: PyTree) -> PyTree:
    """The perturbations ``[B, ...]`` like theta (materialized low-rank ones)."""
    return eps.dense if isinstance(eps, lowrank_noise.LowRankNoise) else eps


def perturbed(theta: PyTree, eps: PyTree) -> PyTree:
    """``[theta + eps; theta - eps]``: ``[2B, ...]`` from ``eps`` ``[B, ...]``."""
    plus = jax.tree.map(lambda t, e: jnp.broadcast_to(t, e.shape) + e, theta, eps)
    minus = jax.tree.map(lambda t, e: jnp.broadcast_to(t, e.shape) - e, theta, eps)
    return base.concat_pairs(plus, minus)


def perturbed_axes(theta: PyTree, eps: PyTree) -> tuple[PyTree, PyTree]:
    """``(thetas [2B], vmap in_axes)``: :func:`perturbed` (``in_axes`` 0) for dense ``eps``,
    factored thetas around the shared weights for low-rank ones."""
    if isinstance(eps, lowrank_noise.LowRankNoise):
        return lowrank_noise.perturbed(theta, eps)
    return perturbed(theta, eps), True


def pair_mask(out_pos: StepOut, out_neg: StepOut, v_pos: jax.Array, v_neg: jax.Array):
    """``(valid, desync)``: ``valid`` ``bool [B, n]`` (the steps that count) and ``desync``
    ``bool [B]`` (the halves went out of step: restart the pair, :func:`resync_pairs`).

    With ``seg_t`` the number of resets before step ``t`` (its episode segment), a step counts
    iff its segment has no bad event (a non-finite loss in either half) and no desync happened
    in or before its segment.
    """
    n = v_pos.shape[-1]
    bad = ~base.finite_steps(out_pos, v_pos) | ~base.finite_steps(out_neg, v_neg)
    split = out_pos.done != out_neg.done
    done = out_pos.done.astype(jnp.int32)
    seg = jnp.cumsum(done, axis=-1) - done  # [B, n], segment index of each step

    def per_pair(seg, bad, split):
        seg_bad = jnp.zeros((n,), jnp.int32).at[seg].max(bad.astype(jnp.int32)) > 0
        seg_split = jnp.cumsum(jnp.zeros((n,), jnp.int32).at[seg].max(split.astype(jnp.int32))) > 0
        return ~(seg_bad[seg] | seg_split[seg])

    valid = jax.vmap(per_pair)(seg, bad, split)
    return valid, jnp.any(split, axis=-1)


def pair_unroll(
    problem: InnerProblem,
    key: jax.Array,
    theta: PyTree,
    eps: PyTree,
    pos: InnerState,
    neg: InnerState,
    num_steps: int,
    meta_loss: str,
    axis_name: str | None = None,
) -> tuple[InnerState, InnerState, PairOut]:
    """Unroll the ``B`` pairs ``num_steps`` steps; returns the new halves and a :class:`PairOut`.

    Pair ``i`` unrolls with key ``split(key, B)[i]`` (per device block with ``axis_name``).
    ``eps``: dense perturbations ``[B, ...]`` or a :class:`.lowrank_noise.LowRankNoise`.
    """
    num_pairs = jax.tree.leaves(dense(eps))[0].shape[0]
    keys = base.split_keys(key, num_pairs, axis_name)
    thetas, axes = perturbed_axes(theta, eps)
    states, out = problem.unroll_batch(
        jnp.concatenate([keys, keys]), thetas, base.concat_pairs(pos, neg),
        num_steps, theta_batched=axes,
    )
    new_pos, new_neg = base.split_pairs(states, num_pairs)
    out_pos, out_neg = base.split_pairs(out, num_pairs)
    v_pos, v_neg = base.step_values(out_pos, meta_loss), base.step_values(out_neg, meta_loss)
    valid, desync = pair_mask(out_pos, out_neg, v_pos, v_neg)
    nonfinite = out_pos.nonfinite | out_neg.nonfinite
    return new_pos, new_neg, PairOut(v_pos, v_neg, valid, desync, out_pos.done, nonfinite)


def resync_pairs(desync: jax.Array, pos: InnerState, neg: InnerState) -> InnerState:
    """The negative halves, replaced by a copy of the positive one where ``desync`` [B]."""
    return base.tree_where(desync, pos, neg)


def pair_metrics(po: PairOut, weights, num_pairs: int, num_steps: int, counted=None) -> dict:
    """``meta_loss`` (mean of both halves over the valid ``counted`` steps), counters, cost."""
    counted = jnp.ones_like(po.valid) if counted is None else counted
    valid = po.valid & counted
    both = jnp.concatenate([po.pos, po.neg], axis=0)
    valid2 = jnp.concatenate([valid, valid], axis=0)
    return {
        "meta_loss": base.mean_meta_loss(both, weights, valid2),
        "nonfinite_steps": jnp.sum(po.nonfinite & counted).astype(jnp.float32),
        "masked_tasks": jnp.sum(jnp.any(counted & ~po.valid, axis=1)).astype(jnp.float32),
        "restarted_tasks": jnp.sum(po.desync).astype(jnp.float32),
        **base.cost_metrics(2 * num_pairs, num_steps),
    }
