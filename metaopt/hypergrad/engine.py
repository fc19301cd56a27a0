"""What the hypergradient estimators share: episodes, truncations, tasks, pull-back, metrics.

Each estimator is a *segment* function for one task,

    segment(bilevel, ctx, cfg, w, acc, keys) -> Segment(grad, w, acc, loss),

that runs ``n = len(keys)`` inner steps from ``w`` and returns its estimate of
``d L_val(w_n) / d ctx`` (``grad``), the final iterate, its running accumulator (greedy's
discounted sum; ``()`` for the others) and ``L_val(w_n)``. :func:`build` turns it into a
:class:`metaopt.estimators.Estimator` in one of two modes:

* **full episodes** (``unroll_length=None``): every call samples ``num_tasks`` fresh episodes
  and runs ``n = horizon`` steps. Keys are split as in
  :func:`metaopt.estimators.full_backprop`: ``k_init, k_unroll = split(key)``, task ``i`` starts
  from ``init(split(k_init, B)[i])`` and step ``t`` uses ``split(split(k_unroll, B)[i], n)[t]``.
  The state is :class:`metaopt.estimators.NoState`.
* **online** (``unroll_length=n``, dividing ``horizon``): the state carries the tasks' iterates
  and accumulators across calls (:class:`HypergradState`); each call runs the next ``n`` steps
  and returns the estimate at the current iterate. When ``horizon`` steps are done, or a task's
  iterate became non-finite, that task starts a new episode at the next call.

Per task, ``ctx = context(alpha, cfg)`` and the estimate is pulled back to ``alpha`` with one
VJP of ``context``; tasks whose gradient or loss is non-finite are dropped from the mean.
Metrics: ``meta_loss`` (mean ``L_val`` at the segment end over the kept tasks),
``inner_steps`` (``B n``), ``vjps`` (``B x`` the estimator's VJPs through ``Phi`` per task:
FO 0, T1-T2 1, greedy ``n``, IFT ``K + 1``, RMD ``n``), ``jvps`` (0), ``nonfinite_steps``
(``n x`` the tasks whose final loss is non-finite), ``masked_tasks`` (tasks dropped from the
mean) and, online, ``resets`` (tasks that started a new episode at this call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.hypergrad.bilevel import Bilevel, check_bilevel, float_leaves

PyTree = Any


class Segment(NamedTuple):
    """One task's result over one segment of ``n`` steps."""

    grad: PyTree  # like ctx: the estimate of dL_val(w_n)/dctx
    w: PyTree  # the iterate w_n
    acc: PyTree  # greedy's accumulator (like ctx), () for the other estimators
    loss: jax.Array  # float[], L_val(w_n) on the last step's batch


SegmentFn = Callable[[Bilevel, PyTree, PyTree, PyTree, PyTree, jax.Array], Segment]


class HypergradState(NamedTuple):
    """Online state: ``num_tasks`` episodes in progress (leading axis ``[B]``)."""

    cfg: PyTree  # [B, ...] the episodes' fixed configs
    w: PyTree  # [B, ...] the current iterates
    acc: PyTree  # [B, *ctx] greedy's discounted sums, () for the other estimators
    t: jax.Array  # int32[], steps taken in the current episodes (all tasks in step)


# ----------------------------------------------------------------------------- pieces


def unroll(bilevel: Bilevel, ctx: PyTree, cfg: PyTree, w: PyTree, keys: jax.Array) -> PyTree:
    """``w`` after ``len(keys)`` plain steps of ``phi`` (no derivatives): ``w_{t+n}``."""

    def body(w, key):
        return bilevel.phi(w, ctx, bilevel.batch(key, cfg)), None

    return jax.lax.scan(body, w, keys)[0]


def val_grads(bilevel: Bilevel, w: PyTree, ctx: PyTree, batch: PyTree):
    """``(L_val(w), grad_w L_val (float leaves of w), grad_ctx L_val)`` in one reverse pass."""
    floats, rebuild = float_leaves(w)
    loss, (gw, gc) = jax.value_and_grad(
        lambda f, c: bilevel.val_loss(rebuild(f), c, batch), argnums=(0, 1)
    )(floats, ctx)
    return loss, gw, gc


def phi_vjp(bilevel: Bilevel, w: PyTree, ctx: PyTree, batch: PyTree):
    """``(w', vjp)`` with ``w' = phi(w, ctx, batch)`` and ``vjp(v) = v B`` (``B = dw'/dctx``).

    ``v`` is a list like the float leaves of ``w'`` (see :func:`val_grads`).
    """

    def f(c):
        new = bilevel.phi(w, c, batch)
        return float_leaves(new)[0], new

    _, vjp, new = jax.vjp(f, ctx, has_aux=True)
    return new, lambda v: vjp(v)[0]


def tree_add(a: PyTree, b: PyTree) -> PyTree:
    return jax.tree.map(jnp.add, a, b)


# ----------------------------------------------------------------------------- estimator


def build(
    bilevel: Bilevel,
    segment: SegmentFn,
    *,
    num_tasks: int,
    unroll_length: int | None,
    vjps: Callable[[int], int],
    name: str,
    uses_acc: bool = False,
) -> base.Estimator:
    """The :class:`~metaopt.estimators.Estimator` running ``segment`` (see module docstring).

    Args:
      bilevel: the problem.
      segment: the estimator's per-task segment function.
      num_tasks: episodes ``B`` per estimate.
      unroll_length: ``None`` for full episodes, or steps per call in online mode (must divide
        ``bilevel.horizon``).
      vjps: VJPs through ``Phi`` per task for a segment of ``n`` steps.
      name: the estimator's name.
      uses_acc: the segment keeps an accumulator shaped like ``ctx``.
    """
    bilevel = check_bilevel(bilevel)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    horizon = bilevel.horizon
    if unroll_length is not None:
        base.check_positive_int("unroll_length", unroll_length)
        if horizon % unroll_length:
            raise ValueError(
                f"unroll_length: must divide the horizon {horizon}, got {unroll_length}"
            )
    n = horizon if unroll_length is None else unroll_length

    def zero_acc(alpha, cfg):
        if not uses_acc:
            return ()
        shapes = jax.eval_shape(bilevel.context, alpha, cfg)
        return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    def per_task(alpha, cfg, w, acc, keys):
        ctx, pull = jax.vjp(lambda a: bilevel.context(a, cfg), alpha)
        seg = segment(bilevel, ctx, cfg, w, acc, keys)
        return pull(seg.grad)[0], seg

    def run(alpha, cfg, w, acc, unroll_key):
        keys = jax.vmap(lambda k: jax.random.split(k, n))(jax.random.split(unroll_key, num_tasks))
        grads, seg = jax.vmap(per_task, (None, 0, 0, 0, 0))(alpha, cfg, w, acc, keys)
        ok = base.all_finite_per_task(grads) & jnp.isfinite(seg.loss)
        grad = base.masked_task_mean(grads, ok)
        loss = jnp.sum(jnp.where(ok, seg.loss, 0.0)) / jnp.maximum(jnp.sum(ok), 1)
        metrics = {
            "meta_loss": loss.astype(jnp.float32),
            "nonfinite_steps": (n * jnp.sum(~jnp.isfinite(seg.loss))).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, n, vjps=num_tasks * vjps(n)),
        }
        return grad, seg, metrics

    def fresh(key, alpha):
        cfg, w = jax.vmap(bilevel.init, (0, None))(jax.random.split(key, num_tasks), alpha)
        acc = jax.vmap(zero_acc, (None, 0))(alpha, cfg)
        return cfg, w, acc

    if unroll_length is None:

        def init(key, alpha):
            del key, alpha
            return base.NoState()

        def estimate(key, alpha, state):
            k_init, k_unroll = jax.random.split(key)
            cfg, w, acc = fresh(k_init, alpha)
            grad, _, metrics = run(alpha, cfg, w, acc, k_unroll)
            return grad, state, metrics

        return base.Estimator(init=init, estimate=estimate, name=name)

    def init_online(key, alpha):
        cfg, w, acc = fresh(key, alpha)
        return HypergradState(cfg, w, acc, jnp.zeros((), jnp.int32))

    def estimate_online(key, alpha, state: HypergradState):
        k_reset, k_unroll = jax.random.split(key)
        ended = state.t >= horizon
        bad = ~base.all_finite_per_task(float_leaves(state.w)[0] or [jnp.zeros((num_tasks, 1))])
        renew = ended | bad  # [B]

        def reset():
            cfg, w, acc = fresh(k_reset, alpha)
            old = (state.cfg, state.w, state.acc)
            return base.tree_where(renew, (cfg, w, acc), old)

        cfg, w, acc = jax.lax.cond(jnp.any(renew), reset,
                                   lambda: (state.cfg, state.w, state.acc))
        t = jnp.where(ended, 0, state.t)
        grad, seg, metrics = run(alpha, cfg, w, acc, k_unroll)
        metrics["resets"] = jnp.sum(renew).astype(jnp.float32)
        return grad, HypergradState(cfg, seg.w, seg.acc, t + n), metrics

    return base.Estimator(init=init_online, estimate=estimate_online, name=name)
