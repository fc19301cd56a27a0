"""The inner problem of a task trained by an (optionally learned) optax optimizer.

For one task, with metaparameters ``theta``:

    w_{t+1} = w_t + u_t,   (u_t, s_{t+1}) = opt(theta).update(g_t, s_t, w_t, loss=L_t, ...),
    g_t = grad_w L_train(w_t, batch_t; hparams(theta)),

and the step reports the training loss ``L_t`` (before the update) and the meta-loss: the
validation loss ``L_val(w_{t+1})`` on a fresh validation batch (``valid=True``) or ``L_t``.

The task contract (:mod:`metaopt.tasks.base`): the *training* objective receives the
metaparameters, ``loss(params, batch, hparams)``; the *validation* objective does not --
it is the task's ``valid_loss(params, batch)`` if it defines one, else ``loss(params, batch)``
without ``hparams`` -- unless the task sets ``valid_hparams=True``, in which case the
validation objective is called with ``hparams`` too. So a ridge task whose penalty sits in
``loss(..., hparams)`` gets its validation loss without the penalty, as the hypergradient
literature defines it.

Two separate settings: ``valid`` (measure the validation loss after each update, reported as
``StepOut.meta_loss``; what an estimator's "valid" or "last" meta-loss weighs) and
``feed_valid_loss`` (give the optimizer the previous step's validation loss as the
``valid_loss`` extra arg; a learned optimizer that reads it must be evaluated the way it was
trained).

The step is the core's reset-free map ``phi`` (:mod:`metaopt.inner.core`), given the step's
keys ``[k, train batch, validation batch, reset]`` (``core.step_keys``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

from metaopt import lowrank
from metaopt.inner import truncation as trunc
from metaopt.inner.core import InnerProblem, InnerState, assemble, finish
from metaopt.tasks.base import Task, TaskFamily, as_family

PyTree = Any
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


def objectives(task: Task, hparams: PyTree):
    """``(train_loss(params, batch), valid_loss(params, batch))`` of ``task`` under the
    contract (module docstring); ``hparams=None`` calls the training loss without them."""

    def train(params, batch):
        return task.loss(params, batch) if hparams is None else task.loss(params, batch, hparams)

    own = task.valid_loss or (lambda params, batch, *h: task.loss(params, batch, *h))

    def valid(params, batch):
        if task.valid_hparams and hparams is not None:
            return own(params, batch, hparams)
        return own(params, batch)

    return train, valid


def _check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return value


def inner_problem(
    task: Task | TaskFamily,
    optimizer: optax.GradientTransformation | OptimizerFn,
    *,
    schedule: trunc.TruncationSchedule,
    valid: bool = True,
    feed_valid_loss: bool = False,
    hparams_fn: Callable[[PyTree], PyTree] | None = None,
) -> InnerProblem:
    """Build the pure inner problem of ``task`` trained by ``optimizer``.

    Args:
      task: a :class:`~metaopt.tasks.Task` or :class:`~metaopt.tasks.TaskFamily` (a task is a
        one-member family), or any object with their functions.
      optimizer: an optax transformation (theta unused), or ``theta -> transformation`` such as
        ``lambda theta: lopt.optimizer(theta)``. Its ``update`` receives the extra args
        ``loss``, ``iteration``, ``num_steps`` and, with ``feed_valid_loss``, ``valid_loss``.
      schedule: a :mod:`metaopt.inner.truncation` schedule for episode lengths.
      valid: measure the validation loss after every update (``StepOut.meta_loss``); with
        ``False`` the meta-loss is the training loss and no validation batch is drawn.
      feed_valid_loss: pass the previous step's validation loss to the optimizer (needs
        ``valid``); at an episode's start, the validation loss of the initial parameters.
      hparams_fn: ``theta -> hparams``, the training loss's third argument (metaparameters
        entering the loss); ``None`` calls ``loss(params, batch)``.
    """
    family = as_family(task)
    if not isinstance(schedule, trunc.TruncationSchedule):
        raise TypeError("schedule: expected a metaopt.inner.truncation schedule (constant, ...)")
    valid = _check_bool("valid", valid)
    feed_valid_loss = _check_bool("feed_valid_loss", feed_valid_loss)
    if feed_valid_loss and not valid:
        raise ValueError("feed_valid_loss: needs valid=True (the validation loss is measured "
                         "only then)")
    opt_fn = as_optimizer_fn(optimizer)
    if not lowrank.takes_lowrank(optimizer):  # low-rank-perturbed theta: dense for it
        dense_fn = opt_fn
        opt_fn = lambda theta: dense_fn(lowrank.materialize(theta))

    def objectives_of(theta, cfg):
        hparams = None if hparams_fn is None else hparams_fn(lowrank.materialize(theta))
        return objectives(family.task(cfg), hparams)

    def init(key, theta) -> InnerState:
        k_cfg, k_par, k_len, k_val = jax.random.split(key, 4)
        cfg = family.sample(k_cfg)
        t = family.task(cfg)
        params = t.init(k_par)
        opt_state = opt_fn(theta).init(params)
        valid_fn = objectives_of(theta, cfg)[1]
        if feed_valid_loss:
            vloss = valid_fn(params, t.batch(k_val, "valid"))
        else:  # not measured yet; the validation loss's dtype (float64 under x64)
            shape = jax.eval_shape(lambda: valid_fn(params, t.batch(k_val, "valid")))
            vloss = jnp.zeros((), shape.dtype)
        zero = jnp.zeros((), jnp.int32)
        return InnerState(cfg, params, opt_state, zero, schedule.sample(k_len), vloss)

    def phi(keys, theta, state: InnerState):
        t = family.task(state.cfg)
        train_loss, valid_loss = objectives_of(theta, state.cfg)
        batch = t.batch(keys[1], "train")
        loss, grads = jax.value_and_grad(train_loss)(state.params, batch)
        extra = {"loss": loss, "iteration": state.iteration, "num_steps": state.length}
        if feed_valid_loss:
            extra["valid_loss"] = state.valid_loss
        updates, opt_state = opt_fn(theta).update(grads, state.opt_state, state.params, **extra)
        params = optax.apply_updates(state.params, updates)
        meta = valid_loss(params, t.batch(keys[2], "valid")) if valid else loss
        vloss = meta.astype(state.valid_loss.dtype) if valid else state.valid_loss
        new = state._replace(params=params, opt_state=opt_state, valid_loss=vloss)
        return finish(loss, meta, state, new)

    def val_loss(keys, theta, state: InnerState):
        t = family.task(state.cfg)
        return objectives_of(theta, state.cfg)[1](state.params, t.batch(keys[2], "valid"))

    return assemble(init=init, phi=phi, val_loss=val_loss, context=None, schedule=schedule,
                    valid=valid, feed_valid_loss=feed_valid_loss, has_train_loss=True,
                    name=family.name)
