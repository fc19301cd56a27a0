"""The query loop of a black-box optimizer and the meta-losses of Chen et al. (2017).

A rollout of ``T`` queries on one function ``f`` from a first query ``x_1`` (drawn by the caller,
e.g. uniformly in the box, so that every method starts from the same point):

    y_1 = f(x_1);   x_t, s_t = propose(theta, s_{t-1}, x_{t-1}, y_{t-1}),  y_t = f(x_t)  (t = 2..T)

is one ``lax.scan``; it is differentiable in ``theta`` whenever ``f`` is (the training
functions), and only calls ``f`` (never its gradient) otherwise.

Meta-losses over the values ``y [..., T]`` (Chen et al. 2017, Sec. 2.1; each divided by ``T``):

* ``"sum"``: ``L_sum = (1/T) sum_t y_t``, every query should be good (exploitation-heavy);
* ``"oi"`` (observed improvement): ``L_OI = (1/T) sum_{t>=2} min(y_t - min_{i<t} y_i, 0)``.
  The sum telescopes to ``(min_t y_t - y_1) / T``: with a first query outside the optimizer's
  control it is the best value found, and its gradient flows through the best query only.

:func:`best_so_far` is the evaluation metric: ``min_{i<=t} y_i`` for every ``t``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaopt.blackbox.policy import QueryPolicy

PyTree = Any
LOSSES = ("sum", "oi")


def rollout(policy: QueryPolicy, theta: PyTree, fn: Callable[[jax.Array], jax.Array],
            x1: jax.Array, horizon: int) -> tuple[jax.Array, jax.Array]:
    """``(xs [T, d], ys [T])``: the queries of ``policy`` on ``fn`` from ``x1`` (module doc)."""
    y1 = fn(x1)

    def step(carry, _):
        state, x, y = carry
        x, state = policy.propose(theta, state, x, y)
        y = fn(x)
        return (state, x, y), (x, y)

    _, (xs, ys) = jax.lax.scan(step, (policy.start(theta), x1, y1), None, length=horizon - 1)
    return jnp.concatenate([x1[None], xs]), jnp.concatenate([y1[None], ys])


def best_so_far(ys: jax.Array) -> jax.Array:
    """``min_{i <= t} y_i`` along the last axis (``[..., T]``)."""
    return jax.lax.cummin(ys, axis=ys.ndim - 1)


def meta_loss(ys: jax.Array, loss: str) -> jax.Array:
    """``L_sum`` or ``L_OI`` (module docstring) of ``ys [..., T]`` -> ``[...]``."""
    if loss == "sum":
        return jnp.mean(ys, axis=-1)
    if loss == "oi":
        prev_best = best_so_far(ys)[..., :-1]
        return jnp.sum(jnp.minimum(ys[..., 1:] - prev_best, 0.0), axis=-1) / ys.shape[-1]
    raise ValueError(f"loss: unknown value {loss!r}; allowed values are {list(LOSSES)}")
