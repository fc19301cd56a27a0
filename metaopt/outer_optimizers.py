"""Outer optimizers by name: the one outer-optimizer registry (:class:`metaopt.spec.Registry`).

An outer optimizer is the optax transformation that applies the (clipped) outer gradient to
theta in :func:`metaopt.outer.outer_step`. Every entry is ``entry(lopt, **options)``: the
builder passes the learned optimizer being meta-trained (only ``self`` reads it; ``None``
when theta is not a learned optimizer's).

=============  ===============================================================================
name           transformation
=============  ===============================================================================
``adam``       ``optax.adam(learning_rate, b1, b2, eps)``
``sgd``        ``optax.sgd(learning_rate, momentum or None, nesterov)``
``adamw``      ``optax.adamw(learning_rate, b1, b2, eps, weight_decay)``
``rmsprop``    ``optax.rmsprop(learning_rate, decay, eps, momentum=momentum or None)``
``self``       the learned optimizer trains its own theta (:func:`self_optimizer`), after
               ``warmup_steps`` outer steps of ``optax.adam(warmup_learning_rate)``
``frozen``     a saved learned optimizer (``source``: a run directory, a saved file or a
               pretrained name), frozen: ``load_optimizer(source)`` then ``optimizer(theta*)``
=============  ===============================================================================

*Self-training* (Metz et al. 2020, sec. 6): with the current metaparameters ``theta_k``,

    theta_{k+1} = theta_k + U_{theta_k}(g_k, s_k),

a transformation whose ``update`` reads ``params`` (= theta) and builds
``lopt.optimizer(params)`` on the fly; its state structure depends only on theta's. The outer
step passes the meta-loss as the ``loss`` extra arg, which learned optimizers such as
``hierarchical`` read (:func:`metaopt.outer.outer_step`).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.spec import Registry

PyTree = Any


def _rate(name: str, value: float) -> float:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
    return value


def _unit(name: str, value: float) -> float:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: must lie in [0, 1), got {value!r}")
    return value


def _nonneg(name: str, value: float) -> float:
    if not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: must be a finite number >= 0, got {value!r}")
    return value


def adam(lopt: Any, *, learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
         eps: float = 1e-8) -> optax.GradientTransformation:
    """``optax.adam``."""
    return optax.adam(_rate("learning_rate", learning_rate), _unit("b1", b1), _unit("b2", b2),
                      _rate("eps", eps))


def sgd(lopt: Any, *, learning_rate: float = 1e-2, momentum: float = 0.0,
        nesterov: bool = False) -> optax.GradientTransformation:
    """``optax.sgd``; ``momentum=0`` is plain SGD (no trace state)."""
    m = _unit("momentum", momentum)
    return optax.sgd(_rate("learning_rate", learning_rate), m or None, nesterov)


def adamw(lopt: Any, *, learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
          eps: float = 1e-8, weight_decay: float = 1e-4) -> optax.GradientTransformation:
    """``optax.adamw``."""
    return optax.adamw(_rate("learning_rate", learning_rate), _unit("b1", b1), _unit("b2", b2),
                       _rate("eps", eps), weight_decay=_nonneg("weight_decay", weight_decay))


def rmsprop(lopt: Any, *, learning_rate: float = 1e-3, decay: float = 0.9, eps: float = 1e-8,
            momentum: float = 0.0) -> optax.GradientTransformation:
    """``optax.rmsprop``; ``momentum=0``: no momentum trace."""
    return optax.rmsprop(_rate("learning_rate", learning_rate), _unit("decay", decay),
                         _rate("eps", eps), momentum=_unit("momentum", momentum) or None)


class SelfTrainState(NamedTuple):
    count: jax.Array  # int32[], outer updates done
    warmup: PyTree  # the warm-up optimizer's state
    inner: PyTree  # the learned optimizer's state for theta


def self_optimizer(lopt, warmup_steps: int = 0,
                   warmup: optax.GradientTransformation | None = None,
                   num_steps: int | None = None) -> optax.GradientTransformationExtraArgs:
    """The learned optimizer ``lopt`` training its own metaparameters (module docstring).

    Extra args given to ``update`` (the meta-loss as ``loss``...) reach the learned optimizer.
    ``num_steps``: the step budget the learned optimizer is told (its schedule's horizon), the
    outer steps it will take after the warm-up; ``None``: its default.
    """
    budget = {} if num_steps is None else {"num_steps": num_steps}
    warm = optax.with_extra_args_support(warmup or optax.adam(1e-3))

    def init(params):
        return SelfTrainState(jnp.zeros((), jnp.int32), warm.init(params),
                              lopt.optimizer(params, **budget).init(params))

    def update(grads, state, params=None, **extra):
        if params is None:
            raise ValueError("self: pass params=<theta> to update(...); the learned optimizer "
                             "reads its own metaparameters from them")
        self_opt = optax.with_extra_args_support(lopt.optimizer(params, **budget))

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


def self_training(lopt: Any, *, warmup_steps: int = 0, warmup_learning_rate: float = 1e-3,
                  num_steps: int = 1000) -> optax.GradientTransformationExtraArgs:
    """The registry entry ``self``: :func:`self_optimizer` after an Adam warm-up;
    ``num_steps``: the self-training budget the learned optimizer is told (set it to
    ``run.outer_steps - warmup_steps``)."""
    if lopt is None:
        raise ValueError("self: needs the learned optimizer being meta-trained (theta must be "
                         "a learned optimizer's metaparameters)")
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps: must be >= 0, got {warmup_steps}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: must be a positive int, got {num_steps!r}")
    return self_optimizer(lopt, warmup_steps,
                          optax.adam(_rate("warmup_learning_rate", warmup_learning_rate)),
                          num_steps)


def frozen(lopt: Any, *, source: str) -> optax.GradientTransformationExtraArgs:
    """The registry entry ``frozen``: the learned optimizer saved at ``source`` (a run
    directory, an ``optimizer.msgpack`` file or a pretrained name) with its trained weights."""
    from metaopt.io.saved import load_optimizer
    from metaopt.spec import SpecError

    try:
        saved_lopt, theta = load_optimizer(source)
    except SpecError as err:
        raise ValueError(f"source: {err}") from None
    return optax.with_extra_args_support(saved_lopt.optimizer(theta))


REGISTRY = Registry("outer", noun="outer optimizer", args=("lopt",))
for _name, _fn in {"adam": adam, "sgd": sgd, "adamw": adamw, "rmsprop": rmsprop,
                   "self": self_training, "frozen": frozen}.items():
    REGISTRY.register(_name, _fn)


def names() -> tuple[str, ...]:
    """Registered outer-optimizer names."""
    return REGISTRY.names()


def make(name: str, lopt: Any = None, **options: Any) -> optax.GradientTransformation:
    """The outer optimizer ``name`` with ``options`` (``lopt``: the one being meta-trained)."""
    return REGISTRY.make(name, lopt, **options)
