"""Argument checks every registered learned optimizer gets (:data:`metaopt.lopt.REGISTRY`).

Without them a wrong argument surfaces deep inside the update (an MLIR verifier dump, a
``dot_general`` shape error, a bare ``KeyError`` at the first update, or silent all-zero
updates for integer parameters). :func:`checked` wraps a :class:`LearnedOptimizer` so that

* ``optimizer(theta)`` raises ValueError unless theta has the structure and shapes of
  ``init(key)`` (theta of another learned optimizer, or of other options);
* ``init(params)`` raises ValueError for an empty pytree and TypeError for a leaf that is not
  a floating-point array (a Python float, integer parameters);
* ``update(updates, state, params)`` raises ValueError when the updates' structure or shapes
  differ from ``params``, or do not fit the state (re-raised with the first line of the
  error, the original chained).

The checks run on shapes at trace time: nothing is added to the compiled update.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.lopt.base import LearnedOptimizer, MissingExtraArgError

PyTree = Any


def _layout(tree: PyTree) -> tuple[Any, list[tuple[str, tuple[int, ...]]]]:
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return jax.tree.structure(tree), [(jax.tree_util.keystr(k), np.shape(x)) for k, x in leaves]


def _first_difference(got: PyTree, want: PyTree) -> str:
    (gs, gl), (ws, wl) = _layout(got), _layout(want)
    if gs != ws:
        return (f"expected keys {[k for k, _ in wl][:8]}, got {[k for k, _ in gl][:8]}"
                if [k for k, _ in gl] != [k for k, _ in wl] else f"expected {ws}, got {gs}")
    for (k, g), (_, w) in zip(gl, wl, strict=True):
        if g != w:
            return f"{k or 'the leaf'} has shape {g}, expected {w}"
    return ""


def check_theta(name: str, theta: PyTree, like: PyTree) -> None:
    why = _first_difference(theta, like)
    if why:
        raise ValueError(f"theta: does not fit the learned optimizer {name} ({why}); give the "
                         f"theta of {name}.init(key) with the same options, or load both with "
                         f"metaopt.load_optimizer")


def check_params(name: str, params: PyTree, arg: str = "params") -> None:
    leaves = jax.tree_util.tree_leaves_with_path(params)
    if not leaves:
        raise ValueError(f"{arg}: {name} needs at least one parameter array, got an empty "
                         f"pytree {params!r}")
    for path, x in leaves:
        where = jax.tree_util.keystr(path) or "the leaf"
        if not isinstance(x, jax.Array | np.ndarray | np.generic):
            raise TypeError(f"{arg}: {where} is a {type(x).__name__}; {name} expects "
                            f"floating-point arrays (e.g. jnp.asarray(x, jnp.float32))")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise TypeError(f"{arg}: {where} has dtype {x.dtype}; {name} expects floating-point "
                            f"arrays (integer parameters get no updates)")


def _checked_tx(name: str, tx: optax.GradientTransformationExtraArgs
                ) -> optax.GradientTransformationExtraArgs:
    def init(params):
        check_params(name, params)
        return tx.init(params)

    def update(updates, state, params=None, **extra):
        check_params(name, updates, "updates")
        if params is not None:
            why = _first_difference(updates, params)
            if why:
                raise ValueError(f"updates: the gradients do not match params ({why}); "
                                 f"{name} needs one gradient per parameter, same structure "
                                 f"and shapes")
        try:
            return tx.update(updates, state, params, **extra)
        except MissingExtraArgError:
            raise
        except (TypeError, ValueError) as err:  # e.g. updates of other shapes than the state
            first = (str(err).splitlines() or [type(err).__name__])[0][:200]
            raise ValueError(f"updates: do not fit the optimizer state of {name} ({first}); "
                             f"give gradients with the structure and shapes of the params "
                             f"the state was initialized with") from err

    return optax.GradientTransformationExtraArgs(init, update)


def checked(lo: LearnedOptimizer) -> LearnedOptimizer:
    """``lo`` with the argument checks of the module docstring."""
    like = []

    @functools.wraps(lo.optimizer)  # same signature (optax.inject_hyperparams reads it)
    def optimizer(theta, **static):
        if not like:
            like.append(jax.eval_shape(lo.init, jax.random.key(0)))
        check_theta(lo.name, theta, like[0])
        return _checked_tx(lo.name, lo.optimizer(theta, **static))

    return lo._replace(optimizer=optimizer)


def checked_constructor(fn):
    """A registry constructor whose learned optimizers are :func:`checked` (same signature)."""

    @functools.wraps(fn)
    def make(*args, **options):
        return checked(fn(*args, **options))

    return make
