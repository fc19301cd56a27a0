"""Outer optimizers made of learned optimizers: ``self``-training and frozen ones.

*Self-training* (Metz et al. 2020, sec. 6): the learned optimizer with the current
metaparameters theta_k updates theta itself,

    theta_{k+1} = theta_k + U_{theta_k}(g_k, s_k),

optionally after ``warmup_steps`` outer steps of a hand-designed warm-up optimizer (Adam), so
that a random initial theta does not have to bootstrap itself. In optax terms this is a
transformation whose ``update`` reads ``params`` (= theta) and builds ``lopt.optimizer(params)``
on the fly; its state structure depends only on theta's structure.

A *frozen* learned optimizer is ``lopt.optimizer(theta*)`` for a theta* saved by an earlier run.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

PyTree = Any


class SelfTrainState(NamedTuple):
    count: jax.Array  # int32[], outer updates done
    warmup: PyTree  # the warm-up optimizer's state
    inner: PyTree  # the learned optimizer's state for theta


def self_optimizer(lopt, warmup_steps: int = 0,
                   warmup: optax.GradientTransformation | None = None
                   ) -> optax.GradientTransformationExtraArgs:
    """The learned optimizer ``lopt`` training its own metaparameters (see module docstring)."""
    warm = optax.with_extra_args_support(warmup or optax.adam(1e-3))

    def init(params):
        return SelfTrainState(jnp.zeros((), jnp.int32), warm.init(params),
                              lopt.optimizer(params).init(params))

    def update(grads, state, params=None, **extra):
        if params is None:
            raise ValueError("self: pass params=<theta> to update(...); the learned optimizer "
                             "reads its own metaparameters from them")
        self_opt = lopt.optimizer(params)

        def by_self():
            u, s = self_opt.update(grads, state.inner, params, **extra)
            return u, state._replace(inner=s)

        def by_warmup():
            u, s = warm.update(grads, state.warmup, params, **extra)
            return u, state._replace(warmup=s)

        if warmup_steps > 0:
            updates, new = jax.lax.cond(state.count < warmup_steps, by_warmup, by_self)
        else:
            updates, new = by_self()
        return updates, new._replace(count=state.count + 1)

    return optax.GradientTransformationExtraArgs(init, update)


def frozen_optimizer(run_dir: str) -> optax.GradientTransformation:
    """The learned optimizer saved in ``run_dir`` (its config names which one) or the
    pretrained entry of that name (:mod:`metaopt.pretrained`), frozen."""
    from metaopt import pretrained
    from metaopt.train.artifacts import load_learned_optimizer

    lopt, theta = load_learned_optimizer(pretrained.resolve(run_dir))
    return lopt.optimizer(theta)
