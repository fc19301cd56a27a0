"""The inner problem: a task trained by an (optionally learned) optax optimizer, truncated.

This is the pure object every outer-gradient estimator consumes (DESIGN.md, "InnerProblem").
For one task, with metaparameters ``theta``:

    w_{t+1} = w_t + u_t,   (u_t, s_{t+1}) = opt(theta).update(g_t, s_t, w_t, loss=L_t, ...),
    g_t = grad_w L_train(w_t, batch_t; hparams(theta)),

and the step reports the training loss ``L_t`` (before the update) and the meta-loss: the
validation loss of ``w_{t+1}`` on a fresh validation batch (``meta_loss="valid"``) or ``L_t``
(``meta_loss="train"``). When the episode's iteration counter reaches its length, or a loss is
non-finite, the task is reset (new task config, params, optimizer state and episode length)
and the step says so in ``StepOut.done`` / ``StepOut.nonfinite``.

``unroll`` is one ``lax.scan`` over ``step``; ``unroll_batch`` is one ``vmap`` over tasks inside
that scan. Resets in a batch run behind one ``lax.cond(any(done))`` so that fresh inits are only
computed on the steps where some task ends, instead of on every step as a vmapped ``cond``
(which lowers to ``select``) would.

Keys: ``unroll(key, ...)`` uses ``jax.random.split(key, n)[t]`` as step ``t``'s key, and a step
splits its key into (train batch, validation batch, reset) keys; ``unroll_batch(keys, ...)`` is
exactly ``vmap(unroll)`` over the per-task ``keys``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.inner import truncation as trunc
from tasks.base import Task, TaskFamily, as_family

PyTree = Any
META_LOSSES = ("valid", "train")


class InnerState(NamedTuple):
    """State of one inner task (a leading task axis when batched)."""

    cfg: PyTree  # the task config, arrays from TaskFamily.sample
    params: PyTree  # the task's parameters w_t
    opt_state: PyTree  # the inner optimizer's state s_t
    iteration: jax.Array  # int32[], step index within the current episode
    length: jax.Array  # int32[], number of steps of the current episode
    valid_loss: jax.Array  # float32[], latest validation loss (a learned-optimizer feature)


class StepOut(NamedTuple):
    """What one inner step reports (a leading time axis after ``unroll``)."""

    loss: jax.Array  # float32[], training loss L_t of the batch, before the update
    meta_loss: jax.Array  # float32[], validation loss after the update (or L_t)
    iteration: jax.Array  # int32[], the episode iteration this step performed
    done: jax.Array  # bool[], the episode ended here and the task was reset
    nonfinite: jax.Array  # bool[], the reset was caused by a non-finite loss


class InnerProblem(NamedTuple):
    """Pure functions of a truncated inner problem; build with :func:`inner_problem`."""

    init: Callable[[jax.Array, PyTree], InnerState]
    step: Callable[[jax.Array, PyTree, InnerState], tuple[InnerState, StepOut]]
    unroll: Callable[..., tuple[InnerState, StepOut]]
    init_batch: Callable[..., InnerState]
    unroll_batch: Callable[..., tuple[InnerState, StepOut]]
    family: TaskFamily
    schedule: trunc.TruncationSchedule
    meta_loss: str


OptimizerFn = Callable[[PyTree], optax.GradientTransformation]


def as_optimizer_fn(optimizer: optax.GradientTransformation | OptimizerFn) -> OptimizerFn:
    """``theta -> transform`` (with extra-args support) from a transform or such a function."""
    if isinstance(optimizer, optax.GradientTransformation):
        fixed = optax.with_extra_args_support(optimizer)
        return lambda theta: fixed
    if callable(optimizer):
        return lambda theta: optax.with_extra_args_support(optimizer(theta))
    raise TypeError(
        "optimizer: expected an optax.GradientTransformation or a function theta -> "
        f"GradientTransformation, got {type(optimizer).__name__}"
    )


def _tree_where(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``where`` with ``pred`` of shape [B] broadcast over each leaf's trailing axes."""

    def pick(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def inner_problem(
    task: Task | TaskFamily,
    optimizer: optax.GradientTransformation | OptimizerFn,
    *,
    schedule: trunc.TruncationSchedule,
    meta_loss: str = "valid",
    hparams_fn: Callable[[PyTree], PyTree] | None = None,
) -> InnerProblem:
    """Build the pure inner problem.

    Args:
      task: a :class:`tasks.Task` or :class:`tasks.TaskFamily` (a task is a one-member family).
      optimizer: an optax transformation (theta unused), or ``theta -> transformation`` such as a
        learned optimizer's ``lambda theta: lopt.optimizer(theta)``. Its ``update`` receives the
        extra args ``loss``, ``iteration``, ``num_steps`` and, with ``meta_loss="valid"``,
        ``valid_loss`` (the previous step's validation loss).
      schedule: a :mod:`metaopt.inner.truncation` schedule for episode lengths.
      meta_loss: ``"valid"`` (validation loss after each update) or ``"train"``.
      hparams_fn: ``theta -> hparams`` passed as the task loss's third argument (metaparameters
        entering the loss); ``None`` calls ``loss(params, batch)``.
    """
    family = as_family(task)
    if meta_loss not in META_LOSSES:
        raise ValueError(
            f"meta_loss: unknown value {meta_loss!r}; allowed values are {list(META_LOSSES)}"
        )
    if not isinstance(schedule, trunc.TruncationSchedule):
        raise TypeError("schedule: expected a metaopt.inner.truncation schedule (constant, ...)")
    opt_fn = as_optimizer_fn(optimizer)
    use_valid = meta_loss == "valid"

    def task_loss(t: Task, theta, params, batch):
        if hparams_fn is None:
            return t.loss(params, batch)
        return t.loss(params, batch, hparams_fn(theta))

    def fresh(key, theta) -> InnerState:
        k_cfg, k_par, k_len, k_val = jax.random.split(key, 4)
        cfg = family.sample(k_cfg)
        t = family.task(cfg)
        params = t.init(k_par)
        opt_state = opt_fn(theta).init(params)
        if use_valid:
            vloss = task_loss(t, theta, params, t.batch(k_val, "valid"))
        else:
            vloss = jnp.asarray(jnp.nan, jnp.float32)
        zero = jnp.zeros((), jnp.int32)
        return InnerState(cfg, params, opt_state, zero, schedule.sample(k_len),
                          jnp.asarray(vloss, jnp.float32))

    def advance(keys, theta, state: InnerState) -> tuple[InnerState, StepOut]:
        """One update without the reset. ``keys``: [3] (train, valid, reset)."""
        t = family.task(state.cfg)
        batch = t.batch(keys[0], "train")
        loss, grads = jax.value_and_grad(lambda p: task_loss(t, theta, p, batch))(state.params)
        extra = {"loss": loss, "iteration": state.iteration, "num_steps": state.length}
        if use_valid:
            extra["valid_loss"] = state.valid_loss
        updates, opt_state = opt_fn(theta).update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)
        vloss = task_loss(t, theta, params, t.batch(keys[1], "valid")) if use_valid else loss
        iteration = state.iteration + 1
        nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(vloss))
        done = (iteration >= state.length) | nonfinite
        new = InnerState(state.cfg, params, opt_state, iteration, state.length,
                         jnp.asarray(vloss, jnp.float32))
        return new, StepOut(loss, vloss, state.iteration, done, nonfinite)

    def step_keys(key):
        return jax.random.split(key, 3)

    def step_with_keys(keys, theta, state):
        new, out = advance(keys, theta, state)
        new = jax.lax.cond(out.done, lambda: fresh(keys[2], theta), lambda: new)
        return new, out

    def step(key, theta, state):
        return step_with_keys(step_keys(key), theta, state)

    def unroll(key, theta, state, num_steps: int):
        keys = jax.vmap(step_keys)(jax.random.split(key, num_steps))
        return jax.lax.scan(lambda s, k: step_with_keys(k, theta, s), state, keys)

    def init_batch(key, theta, num_tasks: int, stagger: str = "none", theta_batched=False):
        k_tasks, k_stagger = jax.random.split(key)
        states = jax.vmap(fresh, (0, 0 if theta_batched else None))(
            jax.random.split(k_tasks, num_tasks), theta
        )
        offsets = trunc.start_offsets(k_stagger, states.length, stagger)
        return states._replace(iteration=offsets)

    def unroll_batch(keys, theta, states, num_steps: int, theta_batched=False):
        t_axis = 0 if theta_batched else None
        ks = jax.vmap(lambda k: jax.vmap(step_keys)(jax.random.split(k, num_steps)))(keys)
        ks = jnp.swapaxes(ks, 0, 1)  # [n, B, 3]

        def body(s, k):
            new, out = jax.vmap(advance, (0, t_axis, 0))(k, theta, s)

            def reset():
                fresh_states = jax.vmap(fresh, (0, t_axis))(k[:, 2], theta)
                return _tree_where(out.done, fresh_states, new)

            return jax.lax.cond(jnp.any(out.done), reset, lambda: new), out

        states, outs = jax.lax.scan(body, states, ks)
        return states, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)

    return InnerProblem(init=fresh, step=step, unroll=unroll, init_batch=init_batch,
                        unroll_batch=unroll_batch, family=family, schedule=schedule,
                        meta_loss=meta_loss)
