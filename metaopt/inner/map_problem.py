"""An inner problem given directly by its update map (the bilevel form of seed 001).

    alpha* = argmin_alpha L_val(w_T(alpha), alpha),   w_{t+1} = Phi(w_t, ctx; batch_t),
    ctx = context(alpha, cfg)

for problems that are not "a task trained by an optimizer": quadratic toys, a head trained on
a meta-learned backbone's features, anything whose step is written by hand. The functions:

* ``init(key, alpha) -> (cfg, w_0)``: a new episode; ``cfg`` stays fixed in it (the task's
  data), ``w_0`` is the iterate pytree (parameters and any optimizer state; integer leaves such
  as step counters are carried but never differentiated);
* ``batch(key, cfg) -> batch``: the data of one step (its training batch and the validation
  batch on which ``L_val`` of the step's output is measured); may ignore ``key``;
* ``phi(w, ctx, batch) -> w'`` and ``val_loss(w, ctx, batch) -> scalar``;
* ``context(alpha, cfg) -> ctx`` (``None``: ``ctx = alpha``): computed once per episode and
  carried, so that a meta-learned backbone runs once per episode, not once per step.

The result is an ordinary :class:`~metaopt.inner.InnerProblem` on the one engine
(:mod:`metaopt.inner.core`): ``InnerState.params`` holds ``w``, ``StepOut.meta_loss`` is
``L_val(w_{t+1})`` on the step's batch. There is no separate training loss (``StepOut.loss``
repeats the meta-loss and estimators refuse the "train" meta-loss on such a problem).
Episode ``init`` receives the task's key itself; the episode length is drawn from
``fold_in(key, 1)``; ``batch`` receives the step key itself (``keys[0]``, see
:func:`metaopt.inner.core.step_keys`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from metaopt import lowrank
from metaopt.inner import truncation as trunc
from metaopt.inner.core import InnerProblem, InnerState, assemble, finish

PyTree = Any


def map_problem(
    init: Callable[[jax.Array, PyTree], tuple[PyTree, PyTree]],
    batch: Callable[[jax.Array, PyTree], PyTree],
    phi: Callable[[PyTree, PyTree, PyTree], PyTree],
    val_loss: Callable[[PyTree, PyTree, PyTree], jax.Array],
    *,
    schedule: trunc.TruncationSchedule,
    context: Callable[[PyTree, PyTree], PyTree] | None = None,
    name: str = "map_problem",
) -> InnerProblem:
    """The :class:`~metaopt.inner.InnerProblem` of an update map (module docstring)."""
    for field, fn in (("init", init), ("batch", batch), ("phi", phi), ("val_loss", val_loss)):
        if not callable(fn):
            raise TypeError(f"{field}: expected a function, got {type(fn).__name__}")
    if context is not None and not callable(context):
        raise TypeError(f"context: expected a function or None, got {type(context).__name__}")
    if not isinstance(schedule, trunc.TruncationSchedule):
        raise TypeError("schedule: expected a metaopt.inner.truncation schedule (constant, ...)")

    def init_state(key, alpha) -> InnerState:
        alpha = lowrank.materialize(alpha)  # low-rank-perturbed alpha (ES): dense here
        cfg, w = init(key, alpha)
        zero = jnp.zeros((), jnp.int32)
        ctx = alpha if context is None else context(alpha, cfg)
        dtype = jax.eval_shape(lambda: val_loss(w, ctx, batch(key, cfg))).dtype
        return InnerState(cfg, w, (), zero, schedule.sample(jax.random.fold_in(key, 1)),
                          jnp.zeros((), dtype))

    def step(keys, ctx, state: InnerState):
        ctx = lowrank.materialize(ctx)
        b = batch(keys[0], state.cfg)
        w = phi(state.params, ctx, b)
        meta = val_loss(w, ctx, b)
        new = state._replace(params=w, valid_loss=meta.astype(state.valid_loss.dtype))
        return finish(meta, meta, state, new)

    def state_val_loss(keys, ctx, state: InnerState):
        ctx = lowrank.materialize(ctx)
        return val_loss(state.params, ctx, batch(keys[0], state.cfg))

    dense_context = None if context is None else (
        lambda alpha, cfg: context(lowrank.materialize(alpha), cfg))
    return assemble(init=init_state, phi=step, val_loss=state_val_loss, context=dense_context,
                    schedule=schedule, valid=True, feed_valid_loss=False, has_train_loss=False,
                    name=name)
