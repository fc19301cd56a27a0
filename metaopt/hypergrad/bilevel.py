"""The bilevel problem the hypergradient estimators differentiate (seed 001).

    alpha* = argmin_alpha L_val(w_T(alpha), alpha),   w_{t+1} = Phi(w_t, alpha; batch_{t+1}),

with ``t = 0 .. T-1``. Following the seed's notation (Yakovlev & Bakhteev 2024),

    A_t = dPhi(w_{t-1}, alpha) / dw_{t-1},   B_t = dPhi(w_{t-1}, alpha) / dalpha,

so ``B_t`` belongs to the step that *produces* ``w_t``. The exact hypergradient is

    d_alpha L_val = grad_alpha L_val(w_T) + sum_{t=1}^T grad_w L_val(w_T) (prod_{k=t+1}^T A_k) B_t.

Every hypergradient estimator runs on an :class:`~metaopt.inner.InnerProblem`: ``Phi`` is its
reset-free step ``problem.phi`` and ``L_val`` its ``problem.val_loss``, with the same keys,
staggering, resets, masking and device axis as every other estimator. Two ways to get one:

* :func:`metaopt.inner.inner_problem` -- a task trained by an optax optimizer (``alpha`` is its
  ``theta``: it may enter the optimizer and the training loss through ``hparams_fn``);
* a :class:`Bilevel` -- a problem written by its map (toys, a head on a meta-learned
  backbone's features via ``context``), turned into an InnerProblem by :func:`as_problem`
  (:func:`metaopt.inner.map_problem` with episodes of ``horizon`` steps).

:func:`task_bilevel` is the map view of a task problem (the Bilevel whose ``phi`` and
``val_loss`` are ``problem.phi`` / ``problem.val_loss``), for code that wants to call ``Phi``
by hand, e.g. to check a hypergradient against finite differences.

The differentiated iterate ``w`` of an :class:`~metaopt.inner.InnerState` is its float leaves
of ``(params, opt_state)``, and ``valid_loss`` where the optimizer reads it
(:func:`iterate_floats`): the task config and the step counters are not differentiated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.inner import InnerProblem, InnerState, inner_problem, map_problem, truncation
from metaopt.inner.core import step_keys
from metaopt.tasks.base import Task, TaskFamily

PyTree = Any


def identity_context(alpha: PyTree, cfg: PyTree) -> PyTree:
    """The default ``context``: ``ctx = alpha``."""
    del cfg
    return alpha


class Bilevel(NamedTuple):
    """``w_{t+1} = phi(w_t, ctx, batch)``, objective ``val_loss(w_T, ctx, batch_T)``.

    Fields as :func:`metaopt.inner.map_problem` (``init(key, alpha) -> (cfg, w_0)``,
    ``batch(key, cfg)``, ``phi``, ``val_loss``, ``context``) plus the episode length
    ``horizon``.
    """

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


def as_problem(problem: InnerProblem | Bilevel) -> InnerProblem:
    """The :class:`~metaopt.inner.InnerProblem` of ``problem`` (itself, or a Bilevel's)."""
    if isinstance(problem, InnerProblem):
        return problem
    if isinstance(problem, Bilevel):
        horizon = check_horizon(problem.horizon)
        context = None if problem.context is identity_context else problem.context
        return map_problem(problem.init, problem.batch, problem.phi, problem.val_loss,
                           schedule=truncation.constant(horizon), context=context,
                           name=problem.name)
    raise TypeError(f"problem: expected a metaopt InnerProblem or a metaopt.hypergrad.Bilevel, "
                    f"got {type(problem).__name__}")


# ----------------------------------------------------------------------------- the iterate


def iterate_floats(state: InnerState, with_valid: bool = False
                   ) -> tuple[list[jax.Array], Callable[[list], InnerState]]:
    """The inexact leaves of ``(params, opt_state[, valid_loss])`` and ``rebuild(leaves)``.

    Differentiating with respect to ``w`` means with respect to these leaves; the config,
    counters and any integer leaf (an optimizer's step count) keep their values. The latest
    validation loss is part of the iterate only where the optimizer reads it
    (``with_valid``: the problem's ``feed_valid_loss``).
    """
    part = (state.params, state.opt_state, state.valid_loss if with_valid else ())
    leaves, treedef = jax.tree.flatten(part)
    is_float = [jnp.issubdtype(jnp.result_type(x), jnp.inexact) for x in leaves]
    floats = [x for x, f in zip(leaves, is_float, strict=True) if f]

    def rebuild(new: list[jax.Array]) -> InnerState:
        it = iter(new)
        params, opt_state, valid = treedef.unflatten(
            [next(it) if f else x for x, f in zip(leaves, is_float, strict=True)])
        new = state._replace(params=params, opt_state=opt_state)
        return new._replace(valid_loss=valid) if with_valid else new

    return floats, rebuild


# ----------------------------------------------------------------------------- task view


class TaskIterate(NamedTuple):
    """The iterate ``w`` of a :func:`task_bilevel` (the InnerState without config and length)."""

    params: PyTree  # the task's parameters
    opt_state: PyTree  # the inner optimizer's state
    iteration: jax.Array  # int32[], steps taken in the episode
    valid_loss: jax.Array  # float32[], latest validation loss


def task_bilevel(
    task: Task | TaskFamily,
    optimizer: optax.GradientTransformation | Callable[[PyTree], optax.GradientTransformation],
    *,
    horizon: int,
    hparams_fn: Callable[[PyTree], PyTree] | None = None,
) -> Bilevel:
    """The map view of ``inner_problem(task, optimizer, schedule=constant(horizon), ...)``.

    ``init`` is the problem's ``init``, ``batch(key, cfg)`` carries the step's keys, and ``phi``
    / ``val_loss`` are the problem's ``phi`` / ``val_loss`` on them, so a hypergradient of
    this Bilevel and of the problem itself, with the same key, see the same tasks and batches.
    """
    horizon = check_horizon(horizon)
    problem = inner_problem(task, optimizer, schedule=truncation.constant(horizon),
                            hparams_fn=hparams_fn)
    length = jnp.asarray(horizon, jnp.int32)

    def state(cfg, w: TaskIterate) -> InnerState:
        return InnerState(cfg, w.params, w.opt_state, w.iteration, length, w.valid_loss)

    def iterate(s: InnerState) -> TaskIterate:
        return TaskIterate(s.params, s.opt_state, s.iteration, s.valid_loss)

    def init(key, alpha):
        s = problem.init(key, alpha)
        return s.cfg, iterate(s)

    def batch(key, cfg):
        return {"cfg": cfg, "keys": step_keys(key)}

    def phi(w, alpha, b):
        return iterate(problem.phi(b["keys"], alpha, state(b["cfg"], w))[0])

    def val_loss(w, alpha, b):
        return problem.val_loss(b["keys"], alpha, state(b["cfg"], w))

    return Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon,
                   name=f"{problem.name}_bilevel")
