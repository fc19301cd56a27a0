"""The pure outer step: estimator -> (clip) -> optax outer optimizer -> theta.

One outer step, for a meta-gradient estimator ``E`` and an optax outer optimizer ``O``:

    g, est_state', m = E.estimate(key, theta, est_state)
    g <- pmean(g, axis_name)                          (if data-parallel over a device axis)
    g <- g * min(1, c / ||g||_2)                      (if clip_norm = c)
    u, opt_state' = O.update(g, opt_state, theta);  theta' = theta + u

The outer optimizer also receives the (device-averaged) meta-loss as the ``loss`` extra arg
(``O.update(g, opt_state, theta, loss=meta_loss)``; transformations without extra-args
support ignore it), which a learned optimizer used as its own outer optimizer (``self``) or a
frozen one such as ``hierarchical`` needs.

If ``g`` or the update ``u`` has a non-finite entry, ``theta`` and ``opt_state`` are kept
unchanged and the skip is counted (``OuterState.skipped``, ``metrics["skipped"]``); the
estimator's state still advances (its inner tasks already reset themselves on non-finite
losses).

:func:`outer_step` is one pure function of ``(key, OuterState) -> (OuterState, metrics)`` once its
configuration is bound (:func:`outer_trainer` does this): jit it, scan it, checkpoint the
:class:`OuterState` pytree, or shard it. The estimator keeps its task batch as the leading axis
of its state, so a later data-parallel driver can shard that axis over a mesh and pass
``axis_name`` to average gradients (``lax.pmean``) and metrics across devices.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.estimators.base import COUNTERS as SUMMED_METRICS
from metaopt.estimators.base import Estimator

PyTree = Any


class OuterState(NamedTuple):
    """Everything the outer loop carries; a pytree of arrays (checkpointable as one object)."""

    theta: PyTree  # the metaparameters
    opt_state: PyTree  # the outer optimizer's state
    est_state: PyTree  # the estimator's state (inner tasks, PES accumulators...)
    step: jax.Array  # int32[], outer steps taken (skipped ones included)
    skipped: jax.Array  # int32[], outer steps skipped for a non-finite gradient


class OuterTrainer(NamedTuple):
    """``init(key, theta) -> OuterState``; ``step(key, state) -> (state, metrics)``, pure."""

    init: Callable[[jax.Array, PyTree], OuterState]
    step: Callable[[jax.Array, OuterState], tuple[OuterState, dict[str, jax.Array]]]


def _check(estimator: object, optimizer: object, clip_norm: object) -> None:
    if not isinstance(estimator, Estimator):
        raise TypeError(f"estimator: expected a metaopt Estimator, got {type(estimator).__name__}")
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(
            f"optimizer: expected an optax.GradientTransformation, got {type(optimizer).__name__}"
        )
    if clip_norm is not None and (
        isinstance(clip_norm, bool) or not isinstance(clip_norm, int | float) or clip_norm <= 0
    ):
        raise ValueError(f"clip_norm: must be a positive number or None, got {clip_norm!r}")


def outer_init(
    key: jax.Array, theta: PyTree, *, estimator: Estimator, optimizer: optax.GradientTransformation
) -> OuterState:
    """The initial :class:`OuterState` for ``theta``.

    Leaves of ``theta`` are made strongly typed (``jnp.asarray(1.0)`` is weakly typed, and the
    updated theta is not), so that a jitted step does not compile twice.
    """
    theta = jax.tree.map(lambda x: jnp.asarray(x, jnp.result_type(x)), theta)
    zero = jnp.zeros((), jnp.int32)
    return OuterState(theta, optimizer.init(theta), estimator.init(key, theta), zero, zero)


def _all_finite(tree: PyTree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def _scaled_norm(tree: PyTree) -> tuple[jax.Array, jax.Array]:
    """``(m, r)`` with ``||g||_2 = m * r``, ``m = max |g_i|`` (1 if g = 0 or non-finite).

    The plain ``sqrt(sum g_i^2)`` overflows float32 once ``|g_i| > ~1e19``, which turned the
    clipping factor of a huge but finite gradient into 0; the scaled form does not.
    """
    leaves = [jnp.asarray(g, jnp.float32) for g in jax.tree.leaves(tree)]
    m = jnp.max(jnp.stack([jnp.max(jnp.abs(g), initial=0.0) for g in leaves]))
    m = jnp.where(jnp.isfinite(m) & (m > 0), m, 1.0)
    r = jnp.sqrt(sum(jnp.sum(jnp.square(g / m)) for g in leaves))
    return m, r


def outer_step(
    key: jax.Array,
    state: OuterState,
    *,
    estimator: Estimator,
    optimizer: optax.GradientTransformation,
    clip_norm: float | None = None,
    axis_name: str | None = None,
) -> tuple[OuterState, dict[str, jax.Array]]:
    """One pure outer update (see the module docstring). Metrics are float32 scalars.

    Metrics: the estimator's (``meta_loss``, cost counters...), ``grad_norm`` (before
    clipping), ``skipped`` (1.0 if this update was skipped: non-finite gradient or update)
    and ``skipped_total``.
    """
    grad, est_state, metrics = estimator.estimate(key, state.theta, state.est_state)
    if axis_name is not None:
        grad = jax.lax.pmean(grad, axis_name)
        metrics = {
            k: jax.lax.psum(v, axis_name) if k in SUMMED_METRICS else jax.lax.pmean(v, axis_name)
            for k, v in metrics.items()
        }
    finite = _all_finite(grad)
    big, rel_norm = _scaled_norm(grad)
    norm = big * rel_norm  # inf only when the true norm exceeds the float range
    if clip_norm is not None:
        # min(1, c / ||g||) from the scaled form: finite even where ||g||^2 overflows
        scale = jnp.minimum(1.0, (clip_norm / big) / jnp.maximum(rel_norm, 1e-30))
        grad = jax.tree.map(lambda g: (g * scale).astype(g.dtype), grad)
    extra = {"loss": metrics["meta_loss"]} if "meta_loss" in metrics else {}
    updates, opt_state = optax.with_extra_args_support(optimizer).update(
        grad, state.opt_state, state.theta, **extra)
    finite = finite & _all_finite(updates)
    theta = optax.apply_updates(state.theta, updates)

    def keep(new, old):
        return jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)

    skipped = state.skipped + (~finite).astype(jnp.int32)
    new_state = OuterState(keep(theta, state.theta), keep(opt_state, state.opt_state),
                           est_state, state.step + 1, skipped)
    metrics = {
        **{k: jnp.asarray(v, jnp.float32) for k, v in metrics.items()},
        "grad_norm": norm.astype(jnp.float32),
        "skipped": (~finite).astype(jnp.float32),
        "skipped_total": skipped.astype(jnp.float32),
    }
    return new_state, metrics


def outer_trainer(
    estimator: Estimator,
    optimizer: optax.GradientTransformation,
    *,
    clip_norm: float | None = None,
    axis_name: str | None = None,
) -> OuterTrainer:
    """Bind an estimator and an outer optimizer into pure ``init`` / ``step`` functions.

    Args:
      estimator: a :class:`~metaopt.estimators.Estimator`.
      optimizer: any optax transformation for theta (e.g. ``optax.adam(1e-3)``).
      clip_norm: clip the outer gradient to this global norm; ``None`` for no clipping.
      axis_name: a mapped axis (``shard_map`` / ``pmap``) to average gradients over.

    Example::

        trainer = outer_trainer(pes(problem, num_tasks=8, sigma=0.01, unroll_length=20),
                                optax.adam(1e-2), clip_norm=1.0)
        state = trainer.init(key, theta)
        step = jax.jit(trainer.step)
        for k in jax.random.split(key, 100):
            state, metrics = step(k, state)
    """
    _check(estimator, optimizer, clip_norm)
    return OuterTrainer(
        init=functools.partial(outer_init, estimator=estimator, optimizer=optimizer),
        step=functools.partial(outer_step, estimator=estimator, optimizer=optimizer,
                               clip_norm=clip_norm, axis_name=axis_name),
    )
