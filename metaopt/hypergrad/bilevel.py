"""The bilevel problem the hypergradient estimators differentiate (seed 001).

    alpha* = argmin_alpha L_val(w_T(alpha), alpha),   w_{t+1} = Phi(w_t, alpha; batch_{t+1}),

with ``t = 0 .. T-1`` (``T = horizon``) from a fresh episode ``(cfg, w_0) = init(key, alpha)``.
Following the seed's notation (Yakovlev & Bakhteev 2024),

    A_t = dPhi(w_{t-1}, alpha) / dw_{t-1},   B_t = dPhi(w_{t-1}, alpha) / dalpha,

so ``B_t`` belongs to the step that *produces* ``w_t``. The exact hypergradient is

    d_alpha L_val = grad_alpha L_val(w_T) + sum_{t=1}^T grad_w L_val(w_T) (prod_{k=t+1}^T A_k) B_t.

A :class:`Bilevel` is a NamedTuple of pure functions:

* ``init(key, alpha) -> (cfg, w_0)``: a new episode; ``cfg`` is what stays fixed in it (the
  task config, its data), ``w_0`` the iterate pytree (params and optimizer state). Integer
  leaves of ``w`` (step counters) are carried but never differentiated.
* ``batch(key, cfg) -> batch``: the data of one step (its training batch and the validation
  batch on which ``L_val`` of the step's output is measured); ``None`` for deterministic toys.
* ``phi(w, ctx, batch) -> w'``: one inner update.
* ``val_loss(w, ctx, batch) -> float[]``: the validation loss of ``w`` on ``batch``.
* ``context(alpha, cfg) -> ctx``: how ``alpha`` enters ``phi`` and ``val_loss`` (identity by
  default). Everything is differentiated with respect to ``ctx`` and pulled back to ``alpha``
  with one VJP of ``context`` per episode, which is exact because every estimator is linear in
  ``B_t`` and ``grad_alpha``. A meta-learned backbone uses it: ``ctx`` = the backbone's features
  of the episode's data, so the inner loop never re-runs the backbone.

:func:`task_bilevel` builds one from a :class:`tasks.Task` / :class:`tasks.TaskFamily` and an
optax optimizer, with the same ingredients, step and random keys as
:func:`metaopt.inner.inner_problem`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.inner import inner_problem, truncation
from metaopt.inner.problem import as_optimizer_fn
from tasks.base import Task, TaskFamily

PyTree = Any


def identity_context(alpha: PyTree, cfg: PyTree) -> PyTree:
    """The default ``context``: ``ctx = alpha``."""
    del cfg
    return alpha


class Bilevel(NamedTuple):
    """``w_{t+1} = phi(w_t, ctx, batch)``, objective ``val_loss(w_T, ctx, batch_T)``."""

    init: Callable[[jax.Array, PyTree], tuple[PyTree, PyTree]]
    batch: Callable[[jax.Array, PyTree], PyTree]
    phi: Callable[[PyTree, PyTree, PyTree], PyTree]
    val_loss: Callable[[PyTree, PyTree, PyTree], jax.Array]
    horizon: int
    context: Callable[[PyTree, PyTree], PyTree] = identity_context
    name: str = "bilevel"


def check_horizon(horizon: object) -> int:
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon <= 0:
        raise ValueError(f"horizon: must be a positive integer (>= 1), got {horizon!r}")
    return horizon


def check_bilevel(bilevel: object) -> Bilevel:
    if not isinstance(bilevel, Bilevel):
        raise TypeError(
            f"bilevel: expected a metaopt.hypergrad.Bilevel, got {type(bilevel).__name__}"
        )
    check_horizon(bilevel.horizon)
    return bilevel


# ----------------------------------------------------------------------------- float leaves


def float_leaves(tree: PyTree) -> tuple[list[jax.Array], Callable[[list[jax.Array]], PyTree]]:
    """The inexact leaves of ``tree`` and ``rebuild(new_leaves) -> tree`` (ints kept as are).

    Differentiating with respect to ``w`` means with respect to these leaves: step counters
    and other integer leaves have no tangent space.
    """
    leaves, treedef = jax.tree.flatten(tree)
    is_float = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
    floats = [x for x, f in zip(leaves, is_float, strict=True) if f]

    def rebuild(new: list[jax.Array]) -> PyTree:
        it = iter(new)
        return treedef.unflatten([next(it) if f else x for x, f in zip(leaves, is_float,
                                                                     strict=True)])

    return floats, rebuild


# ----------------------------------------------------------------------------- from a task


class TaskIterate(NamedTuple):
    """The iterate ``w`` of a :func:`task_bilevel` (the InnerState without its config)."""

    params: PyTree  # the task's parameters
    opt_state: PyTree  # the inner optimizer's state
    iteration: jax.Array  # int32[], steps taken in the episode
    valid_loss: jax.Array  # float32[], validation loss of params (an optimizer extra arg)


def task_bilevel(
    task: Task | TaskFamily,
    optimizer: optax.GradientTransformation | Callable[[PyTree], optax.GradientTransformation],
    *,
    horizon: int,
    hparams_fn: Callable[[PyTree], PyTree] | None = None,
) -> Bilevel:
    """The bilevel problem of training ``task`` with ``optimizer`` for ``horizon`` steps.

    Arguments as :func:`metaopt.inner.inner_problem` (``alpha`` is its ``theta``: it may enter
    the optimizer, ``optimizer(alpha)``, and the loss, ``hparams_fn(alpha)``). The step is the
    inner problem's step without its reset, and the keys are used the same way: episode
    ``init(key)`` is ``InnerProblem.init(key)``, and step ``t`` of an unroll keyed ``k`` uses
    ``split(split(k, T)[t], 3)`` = (train batch, valid batch, unused). So an estimator here
    and :func:`metaopt.estimators.full_backprop` (``meta_loss="last"``) given the same key
    see the same tasks and batches, and the exact estimators agree.
    """
    horizon = check_horizon(horizon)
    problem = inner_problem(task, optimizer, schedule=truncation.constant(horizon),
                            meta_loss="valid", hparams_fn=hparams_fn)
    family = problem.family
    opt_fn = as_optimizer_fn(optimizer)  # alpha plays theta's role
    num_steps = jnp.asarray(horizon, jnp.int32)

    def task_loss(t: Task, alpha, params, batch):
        if hparams_fn is None:
            return t.loss(params, batch)
        return t.loss(params, batch, hparams_fn(alpha))

    def init(key, alpha):
        s = problem.init(key, alpha)
        return s.cfg, TaskIterate(s.params, s.opt_state, s.iteration, s.valid_loss)

    def batch(key, cfg):
        keys = jax.random.split(key, 3)
        t = family.task(cfg)
        return {"cfg": cfg, "train": t.batch(keys[0], "train"), "valid": t.batch(keys[1], "valid")}

    def phi(w: TaskIterate, alpha, b) -> TaskIterate:
        t = family.task(b["cfg"])
        loss, grads = jax.value_and_grad(lambda p: task_loss(t, alpha, p, b["train"]))(w.params)
        extra = {"loss": loss, "iteration": w.iteration, "num_steps": num_steps,
                 "valid_loss": w.valid_loss}
        updates, opt_state = opt_fn(alpha).update(grads, w.opt_state, w.params, **extra)
        params = optax.apply_updates(w.params, updates)
        vloss = task_loss(t, alpha, params, b["valid"])
        return TaskIterate(params, opt_state, w.iteration + 1, jnp.asarray(vloss, jnp.float32))

    def val_loss(w: TaskIterate, alpha, b):
        return task_loss(family.task(b["cfg"]), alpha, w.params, b["valid"])

    return Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon,
                   name=f"{family.name}_bilevel")
