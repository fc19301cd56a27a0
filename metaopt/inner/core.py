"""The one inner engine: truncated unrolls assembled from a problem's reset-free map ``Phi``.

Every inner problem -- a task trained by an optax optimizer (:func:`~metaopt.inner.inner_problem`)
or a problem given directly by its update map (:func:`~metaopt.inner.map_problem`) -- is four
pure functions of one task,

* ``init(key, theta) -> InnerState``: a new episode (task config, iterate, episode length);
* ``phi(keys, ctx, state) -> (state', StepOut)``: one update without the reset, the map
  ``w_{t+1} = Phi(w_t, ctx; batch_t)`` of the hypergradient literature, with ``keys`` the
  step's keys (:func:`step_keys`: they draw the step's batches);
* ``val_loss(keys, ctx, state) -> scalar``: the validation objective of ``state`` on the
  validation batch of the step keys ``keys`` (the batch ``phi(keys, ...)`` reports its
  meta-loss on);
* ``context(theta, cfg) -> ctx``: how ``theta`` enters ``phi`` and ``val_loss`` for an
  episode with config ``cfg``; ``None`` means ``ctx = theta``. A context computed once per
  episode (a meta-learned backbone's features of the episode's data) is carried through the
  unroll and recomputed only where a task resets,

from which :func:`assemble` builds the step with its reset, the ``lax.scan`` unroll and the
task-batched forms that every estimator -- backprop, ES, PES and the hypergradients -- runs on.

Resets: when an episode's iteration counter reaches its length, or a loss is non-finite, the
task is replaced by ``init(keys[3], theta)``. In a batch, resets run behind one
``lax.cond(any(done))`` so that fresh inits are computed only on the steps where some task
ends (a vmapped ``cond`` would lower to ``select`` and compute them on every step).

Keys: ``unroll(key, ...)`` uses ``k_t = split(key, n)[t]`` as step ``t``'s key, and the step
its keys ``step_keys(k_t) = [k_t, *split(k_t, 3)]`` (the step key itself, then training batch,
validation batch, reset), drawn for the whole unroll before the scan. ``unroll_batch(keys,
...)`` is exactly ``vmap(unroll)`` over the per-task ``keys``; ``scan_batch(keys, ...)``
takes the step keys ``[n, B, 4]`` themselves (the hypergradient estimators run part of a
segment with it and the rest with their own products, on the same keys).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.inner import truncation as trunc

PyTree = Any


class InnerState(NamedTuple):
    """State of one inner task (a leading task axis when batched)."""

    cfg: PyTree  # the task config (arrays), fixed within an episode
    params: PyTree  # the iterate's parameters w_t
    opt_state: PyTree  # the inner optimizer's state s_t (() for map problems)
    iteration: jax.Array  # int32[], step index within the current episode
    length: jax.Array  # int32[], number of steps of the current episode
    valid_loss: jax.Array  # float[], latest validation loss (0 until one is measured)


class StepOut(NamedTuple):
    """What one inner step reports (a leading time axis after ``unroll``)."""

    loss: jax.Array  # float[], training loss L_t of the batch, before the update
    meta_loss: jax.Array  # float[], validation loss after the update (or L_t)
    iteration: jax.Array  # int32[], the episode iteration this step performed
    done: jax.Array  # bool[], the episode ended here and the task was reset
    nonfinite: jax.Array  # bool[], the reset was caused by a non-finite loss


class InnerProblem(NamedTuple):
    """Pure functions of a truncated inner problem (module docstring); build with
    :func:`~metaopt.inner.inner_problem` or :func:`~metaopt.inner.map_problem`."""

    init: Callable[[jax.Array, PyTree], InnerState]
    step: Callable[[jax.Array, PyTree, InnerState], tuple[InnerState, StepOut]]
    unroll: Callable[..., tuple[InnerState, StepOut]]
    init_batch: Callable[..., InnerState]
    unroll_batch: Callable[..., tuple[InnerState, StepOut]]
    scan_batch: Callable[..., tuple[InnerState, PyTree, StepOut]]
    phi: Callable[[jax.Array, PyTree, InnerState], tuple[InnerState, StepOut]]
    val_loss: Callable[[jax.Array, PyTree, InnerState], jax.Array]
    context: Callable[[PyTree, PyTree], PyTree] | None
    contexts: Callable[..., PyTree]
    reset_batch: Callable[..., tuple[InnerState, PyTree]]
    schedule: trunc.TruncationSchedule
    valid: bool  # StepOut.meta_loss is the validation loss after the update
    feed_valid_loss: bool  # the optimizer receives the validation loss as an extra arg
    has_train_loss: bool  # StepOut.loss is a training loss ("train" meta-loss allowed)
    name: str


def tree_where(pred: jax.Array, on_true: PyTree, on_false: PyTree) -> PyTree:
    """Leafwise ``where`` with ``pred`` of shape [B] broadcast over each leaf's trailing axes."""

    def pick(a, b):
        return jnp.where(pred.reshape(pred.shape + (1,) * (a.ndim - pred.ndim)), a, b)

    return jax.tree.map(pick, on_true, on_false)


def theta_axes(theta_batched) -> Any:
    """``vmap`` ``in_axes`` of theta: ``theta_batched`` is ``False`` (shared: ``None``),
    ``True`` (every leaf has a leading task axis: ``0``) or itself an ``in_axes`` tree (e.g.
    :func:`metaopt.lowrank.in_axes`: per-task factors around a shared weight)."""
    if isinstance(theta_batched, bool):
        return 0 if theta_batched else None
    return theta_batched


def step_keys(key: jax.Array) -> jax.Array:
    """A step's keys ``[4]``: ``key`` itself, then its training-batch, validation-batch and
    reset keys ``split(key, 3)``."""
    return jnp.concatenate([key[None], jax.random.split(key, 3)])


def unroll_keys(key: jax.Array, num_steps: int) -> jax.Array:
    """``[num_steps, 4]``: :func:`step_keys` of ``split(key, num_steps)[t]``."""
    return jax.vmap(step_keys)(jax.random.split(key, num_steps))


def batch_keys(keys: jax.Array, num_steps: int) -> jax.Array:
    """``[num_steps, B, 4]`` step keys of ``B`` tasks with per-task keys ``keys`` [B]."""
    return jnp.swapaxes(jax.vmap(lambda k: unroll_keys(k, num_steps))(keys), 0, 1)


def grouped_vmap(fn: Callable, in_axes: tuple, groups: int) -> Callable:
    """``jax.vmap(fn, in_axes)`` computed on ``groups`` equal slices of the batch, then
    concatenated (outputs batched on axis 0): the same values as one ``vmap``, as ``groups``
    independent chains of kernels. XLA:CPU runs independent kernels concurrently, so two
    chains of half-size kernels keep both cores of a small machine busy where one chain of
    small kernels leaves one idle (TBPTT's reverse pass: ``scripts/results/issue16.md``).

    ``in_axes`` entries are ``0`` or ``None`` or trees of them (prefixes of the arguments);
    the batch size must be a multiple of ``groups`` (``ValueError`` otherwise).
    """
    groups = _check_groups(groups)
    mapped = jax.vmap(fn, in_axes)
    if groups == 1:
        return mapped

    def slice_arg(axes, arg, start, stop):
        return _map_mapped(lambda ax, a: jax.lax.slice_in_dim(a, start, stop, axis=ax),
                           axes, arg)

    def run(*args):
        sizes = set(jax.tree.leaves([_map_mapped(lambda ax, a: a.shape[ax], axes, arg,
                                                 keep_unmapped=False)
                                     for axes, arg in zip(in_axes, args, strict=True)]))
        if len(sizes) != 1:  # no mapped leaf, or inconsistent sizes: vmap's own error
            return mapped(*args)
        (size,) = sizes
        if size % groups:
            raise ValueError(f"groups: must divide the batch size {size}, got {groups}")
        n = size // groups
        parts = [mapped(*(slice_arg(ax, a, g * n, (g + 1) * n)
                          for ax, a in zip(in_axes, args, strict=True)))
                 for g in range(groups)]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)

    return run


def _check_groups(groups) -> int:
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups: expected a positive int, got {groups!r}")
    return groups


def _map_mapped(f: Callable, axes, arg, keep_unmapped: bool = True):
    """``arg`` with ``f(axis, leaf)`` applied to the leaves mapped over an axis (``axes`` a
    prefix tree of ``0`` / ``None``); unmapped subtrees are kept, or dropped (``None``)."""
    return jax.tree.map(
        lambda ax, sub: (sub if keep_unmapped else None) if ax is None
        else jax.tree.map(lambda a: f(ax, a), sub), axes, arg, is_leaf=lambda x: x is None)


def finish(loss: jax.Array, meta: jax.Array, state: InnerState, new: InnerState
           ) -> tuple[InnerState, StepOut]:
    """``(new, StepOut)`` with the iteration advanced and ``done`` / ``nonfinite`` decided."""
    iteration = state.iteration + 1
    nonfinite = ~(jnp.isfinite(loss) & jnp.isfinite(meta))
    done = (iteration >= state.length) | nonfinite
    return new._replace(iteration=iteration), StepOut(loss, meta, state.iteration, done,
                                                     nonfinite)


def assemble(
    *,
    init: Callable[[jax.Array, PyTree], InnerState],
    phi: Callable[[jax.Array, PyTree, InnerState], tuple[InnerState, StepOut]],
    val_loss: Callable[[jax.Array, PyTree, InnerState], jax.Array],
    context: Callable[[PyTree, PyTree], PyTree] | None,
    schedule: trunc.TruncationSchedule,
    valid: bool,
    feed_valid_loss: bool,
    has_train_loss: bool,
    name: str,
) -> InnerProblem:
    """The :class:`InnerProblem` of the four functions (module docstring)."""

    def ctx_of(theta, cfg):
        return theta if context is None else context(theta, cfg)

    def step_with_keys(keys, theta, state):
        new, out = phi(keys, ctx_of(theta, state.cfg), state)
        new = jax.lax.cond(out.done, lambda: init(keys[3], theta), lambda: new)
        return new, out

    def step(key, theta, state):
        return step_with_keys(step_keys(key), theta, state)

    def unroll(key, theta, state, num_steps: int):
        keys = unroll_keys(key, num_steps)
        return jax.lax.scan(lambda s, k: step_with_keys(k, theta, s), state, keys)

    def init_batch(key, theta, num_tasks: int, stagger: str = "none", theta_batched=False):
        k_tasks, k_stagger = jax.random.split(key)
        states = jax.vmap(init, (0, theta_axes(theta_batched)))(
            jax.random.split(k_tasks, num_tasks), theta)
        offsets = trunc.start_offsets(k_stagger, states.length, stagger)
        return states._replace(iteration=offsets)

    def contexts(theta, cfg, theta_batched=False):
        """Per-task contexts ``[B, ...]`` (``theta`` itself when there is no context)."""
        if context is None:
            return theta
        return jax.vmap(context, (theta_axes(theta_batched), 0))(theta, cfg)

    def ctx_axis(theta_batched):
        return 0 if context is not None else theta_axes(theta_batched)

    def reset_batch(keys, theta, ctx, new, done, theta_batched=False):
        """Tasks with ``done`` [B] replaced by fresh episodes (drawn from their step keys)."""
        t_axis = theta_axes(theta_batched)

        def reset():
            fresh = jax.vmap(init, (0, t_axis))(keys[:, 3], theta)
            if context is None:
                return tree_where(done, fresh, new), ctx
            return (tree_where(done, fresh, new),
                    tree_where(done, contexts(theta, fresh.cfg, theta_batched), ctx))

        return jax.lax.cond(jnp.any(done), reset, lambda: (new, ctx))

    def scan_batch(keys, theta, states, ctx=None, theta_batched=False, remat=None, groups=1):
        """Run a batch over explicit step keys ``[n, B, 4]``; returns ``(states, ctx, outs)``
        with ``outs`` ``[n, B]`` and ``ctx`` the tasks' contexts at the end (``ctx=None``:
        computed from ``states`` here; ignored without a context). ``remat``: ``None``, or a
        ``jax.checkpoint`` policy (``True``: save nothing) applied to each step, so that
        reverse mode stores only the carried states between steps and recomputes the rest.
        ``groups``: each step maps ``phi`` over that many independent slices of the batch
        (:func:`grouped_vmap`; same values)."""
        c_axis = ctx_axis(theta_batched)
        phi_batch = grouped_vmap(phi, (0, c_axis, 0), groups)

        def body(carry, k):
            s, c = carry if context is not None else (carry, theta)
            new, out = phi_batch(k, c, s)
            new, c = reset_batch(k, theta, c, new, out.done, theta_batched)
            return ((new, c) if context is not None else new), out

        if remat is not None:
            body = jax.checkpoint(body, policy=None if remat is True else remat,
                                  prevent_cse=False)

        if context is None:
            states, outs = jax.lax.scan(body, states, keys)
            return states, theta, outs
        if ctx is None:
            ctx = contexts(theta, states.cfg, theta_batched)
        (states, ctx), outs = jax.lax.scan(body, (states, ctx), keys)
        return states, ctx, outs

    def unroll_batch(keys, theta, states, num_steps: int, theta_batched=False):
        states, _, outs = scan_batch(batch_keys(keys, num_steps), theta, states,
                                     theta_batched=theta_batched)
        return states, jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), outs)

    return InnerProblem(init=init, step=step, unroll=unroll, init_batch=init_batch,
                        unroll_batch=unroll_batch, scan_batch=scan_batch, phi=phi,
                        val_loss=val_loss, context=context, contexts=contexts,
                        reset_batch=reset_batch, schedule=schedule,
                        valid=valid, feed_valid_loss=feed_valid_loss,
                        has_train_loss=has_train_loss, name=name)
