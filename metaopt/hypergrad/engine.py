"""What the hypergradient estimators share, on the one inner engine.

A hypergradient estimator runs a *segment* of ``n`` steps of its batch of ``B`` inner tasks
(an :class:`~metaopt.inner.InnerProblem`) and returns, per task, an estimate of
``d L_val(w_n) / d ctx`` at the segment's last step. The first ``n - m`` steps are plain
(``problem.scan_batch``); the last ``m`` (``m = 1`` for FO, T1-T2 and IFT, ``m = n`` for
greedy) run the estimator's *work* on one task,

    work(key, ctx, state, acc) -> (state', StepOut, acc', est),

one reset-free step ``problem.phi`` with the products the estimator needs (``est`` is its
estimate if the segment ended at this step, ``acc`` greedy's discounted sum, ``()`` for the
others). Resets happen exactly as in every other estimator (``problem.reset_batch``); a task
whose episode ends resets its accumulator too, so an estimate always belongs to the episode
its last step belongs to. Step ``t`` of task ``i`` is keyed ``split(split(key, B)[i], n)[t]``
(``base.split_keys``: per device block with ``axis_name``; ``core.step_keys`` of it), as in
the backprop estimators.

Two modes:

* **full episodes** (``unroll_length=None``): each call starts ``B`` fresh tasks and runs
  ``n = horizon`` steps (default: the schedule's ``max_length``). Keys as
  :func:`metaopt.estimators.full_backprop`: ``k_init, k_unroll = split(key)``. A task whose
  first episode ended before the last step is masked. State: :class:`~.base.NoState`.
* **online** (``unroll_length=n``): :class:`HypergradState` carries the tasks (staggered
  starts, ``stagger``) and greedy's accumulators across calls; each call runs the next ``n``
  steps. Earlier terms of the accumulator were computed under the ``theta`` of their time.

``ctx``: with ``problem.context`` (a meta-learned backbone, say), the segment runs on
``ctx = context(theta, cfg)`` computed once, and the estimates are pulled back to ``theta``
with one VJP of ``context`` for the whole batch (exact: every estimator is linear in ``B_t``
and ``grad_ctx``); tasks whose episode began inside the segment are pulled back through their
new episode's context. Without a context, ``ctx = theta``.

Masking: a task with a non-finite step in the segment, a non-finite estimate or final loss is
dropped from the mean (``masked_tasks``). Metrics: ``meta_loss`` (mean ``L_val(w_n)`` over the
kept tasks), ``inner_steps`` (``B n``), ``vjps`` (``B x`` the VJPs through ``Phi`` per task),
``jvps`` (0), ``nonfinite_steps``, ``masked_tasks`` and, online, ``resets``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.hypergrad.bilevel import Bilevel, as_problem, iterate_floats
from metaopt.inner import InnerProblem, InnerState, StepOut
from metaopt.inner.core import step_keys

PyTree = Any
WorkFn = Callable[[jax.Array, PyTree, InnerState, PyTree],
                  tuple[InnerState, StepOut, PyTree, PyTree]]


class HypergradState(NamedTuple):
    """Online state: ``B`` tasks in progress (leading axis ``[B]``)."""

    inner: InnerState  # [B, ...] the tasks' inner states
    acc: PyTree  # [B, *ctx] greedy's discounted sums, () for the other estimators


# ----------------------------------------------------------------------------- products


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


def phi_vjp(problem: InnerProblem, key, ctx, state: InnerState):
    """``(state', out, vjp)``: one step and ``vjp(v) = v B`` (``B = d w'/d ctx``, ``v`` like
    :func:`~metaopt.hypergrad.bilevel.iterate_floats` of ``state'``)."""

    def f(c):
        new, out = problem.phi(key, c, state)
        return iterate_floats(new, problem.feed_valid_loss)[0], (new, out)

    _, vjp, (new, out) = jax.vjp(f, ctx, has_aux=True)
    return new, out, lambda v: vjp(v)[0]


def val_grads(problem: InnerProblem, key, ctx, state: InnerState):
    """``(L_val, grad_w L_val, grad_ctx L_val)`` of ``state`` on step ``key``'s validation
    batch, in one reverse pass (``grad_w`` over the iterate's float leaves)."""
    floats, rebuild = iterate_floats(state, problem.feed_valid_loss)
    loss, (gw, gc) = jax.value_and_grad(
        lambda f, c: problem.val_loss(key, c, rebuild(f)), argnums=(0, 1))(floats, ctx)
    return loss, gw, gc


# ----------------------------------------------------------------------------- estimator


def build(
    problem: InnerProblem | Bilevel,
    work: Callable[[InnerProblem], WorkFn],
    *,
    last_only: bool,
    num_tasks: int,
    unroll_length: int | None,
    horizon: int | None,
    stagger: str,
    axis_name: str | None,
    vjps: Callable[[int], int],
    name: str,
    uses_acc: bool = False,
) -> base.Estimator:
    """The :class:`~metaopt.estimators.Estimator` running ``work`` (module docstring).

    Args:
      problem: an InnerProblem or a :class:`~metaopt.hypergrad.Bilevel`.
      work: ``problem -> work function`` (module docstring).
      last_only: the work runs on the last step only (else on every step).
      num_tasks: tasks ``B`` per estimate (per device with ``axis_name``).
      unroll_length: ``None`` for full episodes, or steps per call (online).
      horizon: steps of a full episode (default ``problem.schedule.max_length``).
      stagger: first-episode offsets of the online tasks (``truncation.STAGGERS``).
      axis_name: the mapped device axis the task batch is split over, or ``None``.
      vjps: VJPs through ``Phi`` per task for a segment of ``n`` steps.
      name: the estimator's name.
      uses_acc: the work keeps an accumulator shaped like ``ctx``.
    """
    problem = as_problem(problem)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    axis_name = base.check_axis_name(axis_name)
    stagger = base.check_stagger(stagger)
    if unroll_length is None:
        n = base.check_positive_int(
            "horizon", problem.schedule.max_length if horizon is None else horizon)
    else:
        if horizon is not None:
            raise ValueError("horizon: applies to full episodes (unroll_length=None); online, "
                             "the episodes' lengths come from the problem's schedule")
        n = base.check_positive_int("unroll_length", unroll_length)
    m = 1 if last_only else n
    do = work(problem)
    custom = problem.context is not None
    c_axis = 0 if custom else None

    def zero_acc(theta, states) -> PyTree:
        if not uses_acc:
            return ()
        shapes = jax.eval_shape(problem.contexts, theta, states.cfg)
        lead = () if custom else (num_tasks,)
        return jax.tree.map(lambda s: jnp.zeros((*lead, *s.shape), s.dtype), shapes)

    def pull_back(theta, pull, est, ok, moved, cfg_est):
        if not custom:
            return base.masked_task_mean(est, ok, axis_name)
        w = base.task_weights(ok, axis_name)
        grad = base.weighted_pullback(pull, est, jnp.where(moved, 0.0, w))

        def moved_part():  # tasks whose estimate belongs to an episode begun in the segment
            _, pull_new = jax.vjp(lambda th: problem.contexts(th, cfg_est), theta)
            return base.weighted_pullback(pull_new, est, jnp.where(moved, w, 0.0))

        zero = lambda: jax.tree.map(jnp.zeros_like, theta)  # noqa: E731
        grad = tree_add(grad, jax.lax.cond(jnp.any(moved & ok), moved_part, zero))
        return grad if axis_name is None else jax.lax.psum(grad, axis_name)

    def segment(theta, states, acc, key, full: bool):
        keys = base.split_keys(key, num_tasks, axis_name)
        raw = jnp.swapaxes(jax.vmap(lambda k: jax.random.split(k, n))(keys), 0, 1)  # [n, B]
        pull = None
        ctx = theta
        if custom:
            ctx, pull = jax.vjp(lambda th: problem.contexts(th, states.cfg), theta)
        prefix = jax.vmap(jax.vmap(step_keys))(raw[:n - m])  # [n - m, B, 4]
        states, ctx, outs_plain = problem.scan_batch(prefix, theta, states, ctx)

        def body(carry, k_raw):  # the work steps' keys are derived here: O(1) memory in n
            k = jax.vmap(step_keys)(k_raw)
            s, c, a, _, _ = carry
            new, out, a, est = jax.vmap(do, (0, c_axis, 0, 0 if uses_acc else None))(k, c, s, a)
            s, c = problem.reset_batch(k, theta, c, new, out.done)
            if uses_acc:
                a = base.tree_where(out.done, jax.tree.map(jnp.zeros_like, a), a)
            return (s, c, a, est, new.cfg), out

        est0 = jax.tree.map(jnp.zeros_like, ctx if custom else base.broadcast(theta, num_tasks))
        (states, _, acc, est, cfg_est), outs_work = jax.lax.scan(
            body, (states, ctx, acc, est0, states.cfg), raw[n - m:])
        outs = jax.tree.map(lambda a, b: jnp.swapaxes(jnp.concatenate([a, b]), 0, 1),
                            outs_plain, outs_work)  # [B, n]
        final = outs.meta_loss[:, -1]
        moved = jnp.any(outs.done[:, :-1], axis=1)
        ok = (~jnp.any(outs.nonfinite, axis=1) & base.all_finite_per_task(est)
              & jnp.isfinite(final))
        if full:
            ok = ok & ~moved  # only the first episode's estimate counts
        grad = pull_back(theta, pull, est, ok, moved, cfg_est)
        metrics = {
            "meta_loss": jnp.sum(jnp.where(ok, final, 0.0)) / jnp.maximum(jnp.sum(ok), 1),
            "nonfinite_steps": jnp.sum(outs.nonfinite).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, n, vjps=num_tasks * vjps(n)),
        }
        if not full:
            metrics["resets"] = jnp.sum(outs.done).astype(jnp.float32)
        return grad, states, acc, metrics

    if unroll_length is None:

        def init(key, theta):
            del key, theta
            return base.NoState()

        def estimate(key, theta, state):
            k_init, k_unroll = jax.random.split(key)
            init_keys = base.split_keys(k_init, num_tasks, axis_name)
            states = jax.vmap(problem.init, (0, None))(init_keys, theta)
            grad, _, _, metrics = segment(theta, states, zero_acc(theta, states), k_unroll,
                                          full=True)
            return grad, state, metrics

        return base.Estimator(init=init, estimate=estimate, name=name)

    def init_online(key, theta):
        draw = lambda k, b: problem.init_batch(k, theta, b, stagger)
        states = base.per_task(draw, key, num_tasks, axis_name)
        return HypergradState(states, zero_acc(theta, states))

    def estimate_online(key, theta, state: HypergradState):
        grad, states, acc, metrics = segment(theta, state.inner, state.acc, key, full=False)
        return grad, HypergradState(states, acc), metrics

    return base.Estimator(init=init_online, estimate=estimate_online, name=name)
