"""Full-unroll backprop (reverse-mode differentiation through a whole episode).

For each of ``B`` freshly sampled tasks, unroll ``T = horizon`` inner steps from the task's
init under ``theta`` and differentiate the episode's meta-loss exactly:

    F_i(theta) = sum_t w_t v_t(theta),   grad = (1/B') sum_{i ok} dF_i/dtheta

(``w``, ``v`` as in :mod:`metaopt.estimators.base`; only the steps of the first episode count,
so a schedule shorter than ``horizon`` ends the objective at its reset). This is RMD
(Maclaurin et al. 2015; Franceschi et al. 2017): exact, with memory linear in ``T``.

Rematerialization (the values are the same in every case; only time and memory differ):

* ``remat="step"`` (default): each step is a ``jax.checkpoint`` saving nothing: the reverse
  pass stores only the ``T`` carried inner states (O(T * state)) and recomputes each step
  before its VJP (a second forward pass);
* ``remat="none"``: every step's activations are stored (O(T * activations): the inner
  gradient's and the learned optimizer's, many MB per step for a per-parameter network);
* ``remat="step_dots"``: per step, matmul outputs are saved and the elementwise work
  recomputed (``jax.checkpoint_policies.dots_saveable``);
* ``checkpoint_every=K``: the unroll is a scan over ``T / K`` chunks, each a ``jax.checkpoint``:
  only the chunk-boundary states are stored (O(T/K * state)) and each chunk is recomputed
  before its VJP, which then stores what ``remat`` says for the chunk's steps: with
  ``remat="none"`` their activations (O(K * activations), two forward passes), with
  ``"step"`` their states (two-level checkpointing: O((T/K + K) * state), three forward
  passes). The chunks draw their minibatch keys per chunk.

Measured on the 2-core machine (``python scripts/bench.py meta-train --meta-loss train
--schedule log_uniform --devices 1 --skip-memory --estimators full_backprop,full_backprop_none,
full_backprop_groups1,full_backprop_block10``: the 2 x 32 MLP learned optimizer on the digits
MLP, 16 fresh tasks, ``T = 50``; task-steps/s, best of five interleaved rounds, two runs):
per-step remat (the default) 863 / 767, no remat 597 / 570, chunks of 10 steps storing their
activations 511 / 525; per-step remat in one ``vmap`` instead of two task slices 773 / 747.
A third run: per-step remat 918, chunks of 10 storing activations 639, two-level chunks of 10
(``checkpoint_every=10`` with the default ``remat``) 805.
Per-step remat is the fastest although it computes every step twice: without it the reverse
pass reads back every step's stored activations (the per-parameter network's hidden
activations alone are ``[16 x 2,410, 32]`` per layer and step). With per-step remat the tasks
are mapped in two slices per step on CPU (``task_groups``, :func:`~.base.task_groups_for`;
same values); in-process against one ``vmap`` (six paired rounds, medians): +20% with
per-step remat, +7% with chunks of 10, +0.5% without remat (so not used there: it adds
compile time).

Per-task gradients come from one reverse pass with ``theta`` broadcast to ``[B, ...]``
(``d/dtheta_i sum_j F_j(theta_j) = dF_i/dtheta_i``), so that a task whose unroll hit a
non-finite loss (or whose gradient is non-finite: the ``0 * inf`` trap of ``jnp.where`` through
its reset) is dropped instead of poisoning the mean; ``B'`` counts the kept tasks. For a
problem whose ``theta`` enters through a per-episode ``context`` (a meta-learned backbone),
the per-task gradients are taken with respect to the episodes' contexts, computed once with
the shared ``theta``, and their masked mean is pulled back with one VJP of the context: the
same gradient (steps after the first episode do not count), without a per-task copy of the
backbone (which XLA:CPU runs as slow grouped convolutions).

Keys: ``k_init, k_unroll = split(key)``; task ``i`` starts from ``InnerProblem.init(split(k_init,
B)[i])`` and unrolls with key ``split(k_unroll, B)[i]`` (``unroll_batch``'s per-step keys).

Cost per call: ``B T`` inner steps without remat, ``2 B T`` with one level of it (``B (2 T -
1)`` for the ``"last"`` meta-loss with per-step remat, whose last step is not rematerialized),
``3 B T`` with two-level chunks; and ``B T`` step VJPs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.inner import InnerProblem, InnerState, StepOut
from metaopt.inner.core import batch_keys

PyTree = Any


def chunked_unroll(
    problem: InnerProblem,
    keys: jax.Array,
    thetas: PyTree,
    states: InnerState,
    num_steps: int,
    chunk: int | None,
    ctx: PyTree | None = None,
    last_only: bool = False,
    theta_batched: bool | None = None,
    remat=None,
    groups: int = 1,
) -> tuple[InnerState, StepOut]:
    """``unroll_batch`` (theta batched ``[B, ...]``) as ``num_steps / chunk`` remat'ed chunks.

    ``chunk=None`` is one plain ``unroll_batch``. Outputs are ``[B, num_steps]``. ``ctx``:
    the tasks' contexts at the start (``[B, ...]``, problems with a ``context`` only); then
    ``thetas`` is one unbatched theta, used for the episodes begun by resets. ``last_only``
    (the ``"last"`` meta-loss, no chunks): the last step is peeled off the scan and the earlier
    steps' reported losses are constants (``stop_gradient``), so reverse mode neither stores
    nor differentiates every step's validation pass, only the last one's (same estimate).
    ``theta_batched``: override (default: batched iff ``ctx is None``); ``False`` runs every
    task with the one shared ``thetas``. ``remat``: a per-step ``jax.checkpoint`` policy
    (``scan_batch``'s; inside each chunk with ``chunk``). ``groups``: ``scan_batch``'s (the batch
    mapped in that many independent slices per step; same values).
    """
    batched = ctx is None if theta_batched is None else theta_batched
    if last_only and chunk is None:
        return _unroll_last_only(problem, keys, thetas, states, num_steps, ctx, batched, remat,
                                 groups)
    if chunk is None:
        states, _, outs = problem.scan_batch(batch_keys(keys, num_steps), thetas, states, ctx,
                                             theta_batched=batched, remat=remat,
                                             groups=groups)
        return states, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)
    num_chunks = num_steps // chunk
    chunk_keys = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, num_chunks))(keys), 0, 1)

    @jax.checkpoint
    def run_chunk(th, carry, k):
        s, c = carry
        s, c, o = problem.scan_batch(batch_keys(k, chunk), th, s, c, theta_batched=batched,
                                     remat=remat, groups=groups)
        return (s, c if ctx is not None else None), o

    (states, _), outs = jax.lax.scan(lambda c, k: run_chunk(thetas, c, k), (states, ctx),
                                     chunk_keys)
    # outs: [num_chunks, chunk, B] -> [B, num_steps]
    return states, jax.tree.map(
        lambda x: jnp.moveaxis(x, 2, 0).reshape(x.shape[2], num_steps, *x.shape[3:]), outs
    )


def _unroll_last_only(problem, keys, thetas, states, num_steps, ctx, batched, remat=None,
                      groups=1):
    """The last step peeled off the scan (see :func:`chunked_unroll`)."""
    step_keys = batch_keys(keys, num_steps)  # [n, B, 4]
    states, ctx, outs = problem.scan_batch(step_keys[:-1], thetas, states, ctx,
                                           theta_batched=batched, remat=remat, groups=groups)
    outs = jax.lax.stop_gradient(outs)
    c_axis = 0 if (problem.context is not None or batched) else None
    new, last = jax.vmap(problem.phi, (0, c_axis, 0))(step_keys[-1], ctx, states)
    states, _ = problem.reset_batch(step_keys[-1], thetas, ctx, new, last.done, batched)
    outs = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), outs, last)
    return states, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)


#: Per-step rematerialization (of the unroll, or inside each chunk): name -> ``scan_batch``'s
#: ``remat``.
STEP_REMATS = {"none": None, "step": True, "step_dots": jax.checkpoint_policies.dots_saveable}


def step_policy(remat: str):
    """``scan_batch``'s ``remat`` of a ``remat`` option (:data:`STEP_REMATS`)."""
    if remat not in STEP_REMATS:
        raise ValueError(f"remat: unknown value {remat!r}; allowed values are "
                         f"{list(STEP_REMATS)}")
    return STEP_REMATS[remat]


def _sum_first(losses_aux: tuple[jax.Array, Any]) -> tuple[jax.Array, Any]:
    losses, aux = losses_aux
    return jnp.sum(losses), aux


def per_task_grad(
    loss_fn: Callable[[PyTree], tuple[jax.Array, Any]], theta: PyTree, num_tasks: int
) -> tuple[PyTree, Any]:
    """``(grads [B, ...], aux)`` for ``loss_fn(thetas [B, ...]) -> (losses [B], aux)``.

    One reverse pass of ``sum_i losses_i``; task ``i``'s loss must depend on ``thetas[i]`` only.
    """
    return jax.grad(lambda th: _sum_first(loss_fn(th)), has_aux=True)(
        base.broadcast(theta, num_tasks))


def full_backprop(
    problem: InnerProblem,
    *,
    num_tasks: int,
    horizon: int | None = None,
    meta_loss: str = "valid",
    checkpoint_every: int | None = None,
    axis_name: str | None = None,
    remat: str = "step",
    task_groups: int | None = None,
) -> base.Estimator:
    """Exact backprop through full episodes of ``horizon`` steps on ``num_tasks`` fresh tasks.

    Args:
      problem: the inner problem.
      num_tasks: tasks ``B`` per estimate (a fresh batch each call).
      horizon: unrolled steps ``T``; default ``problem.schedule.max_length``.
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      checkpoint_every: ``K`` to rematerialize chunks of ``K`` steps (must divide ``T``);
        ``None``: one unroll. Chunks draw their steps' keys per chunk, so minibatches differ
        from the plain unroll with the same key (tasks and inits do not).
      remat: one of :data:`STEP_REMATS` (module docstring), what each step keeps for its
        VJP: ``"step"`` (default) only its input state (it is recomputed), ``"none"`` its
        activations, ``"step_dots"`` its matmul outputs. Same values in every case. With
        ``checkpoint_every``, inside each recomputed chunk (``"none"``: the chunk's
        activations are stored while its VJP runs; ``"step"``: two-level checkpointing).
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).
      task_groups: each step maps the tasks in that many independent slices (same values;
        must divide ``num_tasks``); ``None`` (default): :func:`~.base.task_groups_for` with
        per-step remat (``"step"``, ``"step_dots"``), else 1.

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
    policy = step_policy(remat)
    task_groups = base.check_task_groups(task_groups, num_tasks)
    weights = base.step_weights(meta_loss, horizon)

    def init(key, theta):
        del key, theta
        return base.NoState()

    def estimate(key, theta, state):
        k_init, k_unroll = jax.random.split(key)
        init_keys = base.split_keys(k_init, num_tasks, axis_name)
        unroll_keys = base.split_keys(k_unroll, num_tasks, axis_name)
        # two task slices by default only with per-step remat: measured to pay there only
        groups = (1 if task_groups is None and policy is None
                  else base.task_groups_for(task_groups, unroll_keys.shape[0]))

        def losses(thetas, ctx=None):
            states = jax.vmap(problem.init)(init_keys, thetas)
            run_theta = thetas if ctx is None else jax.lax.stop_gradient(theta)
            _, out = chunked_unroll(problem, unroll_keys, run_theta, states, horizon,
                                    checkpoint_every, ctx, last_only=meta_loss == "last",
                                    remat=policy, groups=groups)
            values = base.step_values(out, meta_loss)
            finite = base.finite_steps(out, values)
            counted = base.first_episode(out.done)
            return base.weighted(values, weights, finite & counted), (values, finite, counted)

        if problem.context is None:
            grads, (values, finite, counted) = per_task_grad(losses, theta, num_tasks)
            ok = jnp.all(finite | ~counted, axis=1) & base.all_finite_per_task(grads)
            grad = base.masked_task_mean(grads, ok, axis_name)
        else:  # per-task gradients w.r.t. the episodes' contexts, pulled back once
            cfg = jax.vmap(problem.init, (0, None))(init_keys, theta).cfg
            ctx, pull = jax.vjp(lambda th: problem.contexts(th, cfg), theta)
            (g_init, g_ctx), (values, finite, counted) = jax.grad(
                lambda th, c: _sum_first(losses(th, c)), argnums=(0, 1), has_aux=True
            )(base.broadcast(theta, num_tasks), ctx)
            ok = (jnp.all(finite | ~counted, axis=1) & base.all_finite_per_task(g_init)
                  & base.all_finite_per_task(g_ctx))
            pulled = base.weighted_pullback(pull, g_ctx, base.task_weights(ok, axis_name))
            if axis_name is not None:
                pulled = jax.lax.psum(pulled, axis_name)
            grad = jax.tree.map(jnp.add, base.masked_task_mean(g_init, ok, axis_name), pulled)
        steps = horizon + (0 if checkpoint_every is None else horizon)  # chunks: rerun once
        if policy is not None:  # per-step remat: once more, but the peeled last step of "last"
            steps += horizon - int(meta_loss == "last" and checkpoint_every is None)
        metrics = {
            "meta_loss": base.mean_meta_loss(values, weights, finite & counted),
            "nonfinite_steps": jnp.sum(~finite & counted).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, steps, vjps=num_tasks * horizon),
        }
        return grad, state, metrics

    return base.Estimator(init=init, estimate=estimate, name="full_backprop")
