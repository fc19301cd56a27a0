"""Full-unroll backprop (reverse-mode differentiation through a whole episode).

For each of ``B`` freshly sampled tasks, unroll ``T = horizon`` inner steps from the task's
init under ``theta`` and differentiate the episode's meta-loss exactly:

    F_i(theta) = sum_t w_t v_t(theta),   grad = (1/B') sum_{i ok} dF_i/dtheta

(``w``, ``v`` as in :mod:`metaopt.estimators.base`; only the steps of the first episode count,
so a schedule shorter than ``horizon`` ends the objective at its reset). This is RMD
(Maclaurin et al. 2015; Franceschi et al. 2017): exact, but memory O(T * state) for the
reverse pass. With ``checkpoint_every=K`` the unroll is a scan over ``T / K`` chunks, each
wrapped in ``jax.checkpoint``: only the chunk-boundary states are stored (O(T/K * state)) and
one chunk's activations are recomputed during the backward pass (O(K * step)), at the price of
a second forward pass.

Per-task gradients come from one reverse pass with ``theta`` broadcast to ``[B, ...]``
(``d/dtheta_i sum_j F_j(theta_j) = dF_i/dtheta_i``), so that a task whose unroll hit a
non-finite loss (or whose gradient is non-finite: the ``0 * inf`` trap of ``jnp.where`` through
its reset) is dropped instead of poisoning the mean; ``B'`` counts the kept tasks.

Keys: ``k_init, k_unroll = split(key)``; task ``i`` starts from ``InnerProblem.init(split(k_init,
B)[i])`` and unrolls with key ``split(k_unroll, B)[i]`` (``unroll_batch``'s per-step keys).

Cost per call: ``B T`` inner steps (``2 B T`` with remat) and ``B T`` step VJPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.inner import InnerProblem, InnerState, StepOut

PyTree = Any


def chunked_unroll(
    problem: InnerProblem,
    keys: jax.Array,
    thetas: PyTree,
    states: InnerState,
    num_steps: int,
    chunk: int | None,
) -> tuple[InnerState, StepOut]:
    """``unroll_batch`` (theta batched ``[B, ...]``) as ``num_steps / chunk`` remat'ed chunks.

    ``chunk=None`` is one plain ``unroll_batch``. Outputs are ``[B, num_steps]``.
    """
    if chunk is None:
        return problem.unroll_batch(keys, thetas, states, num_steps, theta_batched=True)
    num_chunks = num_steps // chunk
    chunk_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num_chunks))(keys), 0, 1)

    @jax.checkpoint
    def run_chunk(th, s, k):
        return problem.unroll_batch(k, th, s, chunk, theta_batched=True)

    states, outs = jax.lax.scan(lambda s, k: run_chunk(thetas, s, k), states, chunk_keys)
    # outs: [num_chunks, B, chunk] -> [B, num_steps]
    return states, jax.tree.map(
        lambda x: jnp.swapaxes(x, 0, 1).reshape(x.shape[1], num_steps, *x.shape[3:]), outs
    )


def per_task_grad(
    loss_fn: Callable[[PyTree], tuple[jax.Array, Any]], theta: PyTree, num_tasks: int
) -> tuple[PyTree, Any]:
    """``(grads [B, ...], aux)`` for ``loss_fn(thetas [B, ...]) -> (losses [B], aux)``.

    One reverse pass of ``sum_i losses_i``; task ``i``'s loss must depend on ``thetas[i]`` only.
    """
    thetas = base.broadcast(theta, num_tasks)

    def total(th):
        losses, aux = loss_fn(th)
        return jnp.sum(losses), aux

    return jax.grad(total, has_aux=True)(thetas)


def full_backprop(
    problem: InnerProblem,
    *,
    num_tasks: int,
    horizon: int | None = None,
    meta_loss: str = "valid",
    checkpoint_every: int | None = None,
    axis_name: str | None = None,
) -> base.Estimator:
    """Exact backprop through full episodes of ``horizon`` steps on ``num_tasks`` fresh tasks.

    Args:
      problem: the inner problem.
      num_tasks: tasks ``B`` per estimate (a fresh batch each call).
      horizon: unrolled steps ``T``; default ``problem.schedule.max_length``.
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      checkpoint_every: ``K`` to rematerialize chunks of ``K`` steps (must divide ``T``);
        ``None`` stores every step's activations. Chunks draw their steps' keys per chunk, so
        minibatches differ from the plain unroll with the same key (tasks and inits do not).
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).

    Returns:
      An :class:`~metaopt.estimators.base.Estimator` with state :class:`~.base.NoState`.
    """
    problem = base.check_problem(problem)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    horizon = base.check_positive_int(
        "horizon", problem.schedule.max_length if horizon is None else horizon
    )
    meta_loss = base.check_meta_loss(meta_loss, problem)
    if checkpoint_every is not None:
        base.check_positive_int("checkpoint_every", checkpoint_every)
        if horizon % checkpoint_every:
            raise ValueError(
                f"checkpoint_every: must divide horizon={horizon}, got {checkpoint_every}"
            )
    axis_name = base.check_axis_name(axis_name)
    weights = base.step_weights(meta_loss, horizon)

    def init(key, theta):
        del key, theta
        return base.NoState()

    def estimate(key, theta, state):
        k_init, k_unroll = jax.random.split(key)
        init_keys = base.split_keys(k_init, num_tasks, axis_name)
        unroll_keys = base.split_keys(k_unroll, num_tasks, axis_name)

        def losses(thetas):
            states = jax.vmap(problem.init)(init_keys, thetas)
            _, out = chunked_unroll(problem, unroll_keys, thetas, states, horizon,
                                    checkpoint_every)
            values = base.step_values(out, meta_loss)
            finite = base.finite_steps(out, values)
            counted = base.first_episode(out.done)
            return base.weighted(values, weights, finite & counted), (values, finite, counted)

        grads, (values, finite, counted) = per_task_grad(losses, theta, num_tasks)
        ok = jnp.all(finite | ~counted, axis=1) & base.all_finite_per_task(grads)
        grad = base.masked_task_mean(grads, ok, axis_name)
        remat = 2 if checkpoint_every is not None else 1
        metrics = {
            "meta_loss": base.mean_meta_loss(values, weights, finite & counted),
            "nonfinite_steps": jnp.sum(~finite & counted).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, remat * horizon, vjps=num_tasks * horizon),
        }
        return grad, state, metrics

    return base.Estimator(init=init, estimate=estimate, name="full_backprop")
