"""Learnable hand-designed optimizers: SGD, SGD with momentum and Adam, with a learnable schedule.

theta is a flat dict of float32 scalars (plus the schedule's entries, see :mod:`.schedules`):

* ``log_lr``: ``a_0 = exp(log_lr)``; the step-``k`` rate is ``a_k = a_0 * factor(theta, k, T)``.
* ``logit_momentum`` / ``logit_b1`` / ``logit_b2``: decays ``beta = sigmoid(logit)``, with
  ``1 - beta = sigmoid(-logit)`` computed directly (accurate for decays near 1).
* ``log_eps`` (Adam): ``eps = exp(log_eps)``.

Updates (``g`` the incoming gradient, all elementwise):

* SGD: ``u = -a_k g`` (equals ``optax.sgd(a_0)`` for the constant schedule).
* momentum (heavy ball, as ``optax.sgd(lr, momentum)``): ``m' = g + mu m``,
  ``u = -a_k m'`` (Nesterov: ``u = -a_k (g + mu m')``).
* Adam (Kingma & Ba 2015, as ``optax.adam``): ``m' = (1-b1) g + b1 m``,
  ``v' = (1-b2) g^2 + b2 v``, ``n = count + 1``,
  ``u = -a_k (m'/(1-b1^n)) / (sqrt(v'/(1-b2^n) + eps_root) + eps)``.
  The root is :func:`~metaopt.lopt.base.safe_sqrt`, so meta-gradients are finite even where
  ``v' = 0`` with the default ``eps_root = 0``.

The schedule's ``k`` is the ``iteration`` extra arg when given (the inner problem passes it),
else the internal count ``state.count`` (updates applied so far); ``T`` is the ``num_steps``
extra arg, else the static ``num_steps`` of ``optimizer(theta, num_steps=...)``. Adam's bias
correction always uses the internal count: it describes the moments in the state. No extra
arg is required.

Dtypes (as optax): the state (``trace``, ``mu``, ``nu``) has each parameter's dtype and the
updates are cast to it; the rate, decays and schedule are computed in the promotion of
theta's and the gradients' dtypes (theta is cast up to it first), so float64 parameters with
float64 theta run entirely in float64 and float32 ones entirely in float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import schedules
from metaopt.lopt.base import (
    DEFAULT_NUM_STEPS,
    LearnedOptimizer,
    check_decay,
    check_num_steps,
    check_positive,
    compute_dtype,
    decay_from_logit,
    f32,
    logit,
    safe_sqrt,
    step_and_budget,
)

PyTree = Any


class SGDState(NamedTuple):
    count: jax.Array  # int32[], updates applied so far


class MomentumState(NamedTuple):
    count: jax.Array  # int32[]
    trace: PyTree  # like params (same dtypes): m


class AdamState(NamedTuple):
    count: jax.Array  # int32[]
    mu: PyTree  # like params (same dtypes): first moment m
    nu: PyTree  # like params (same dtypes): second moment v


def _zeros_like(params: PyTree) -> PyTree:
    return jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.asarray(p).dtype), params)


def _promoted(theta: dict, updates: PyTree) -> dict:
    """theta cast to :func:`~metaopt.lopt.base.compute_dtype` of theta and the updates."""
    dt = compute_dtype(theta, updates)
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dt), theta)


def _rate(theta, sched: schedules.Schedule, count, extra, num_steps) -> jax.Array:
    """``a_k`` in theta's dtype (``theta`` already :func:`_promoted`)."""
    k, t = step_and_budget(extra, count, num_steps, jnp.result_type(theta["log_lr"]))
    return jnp.exp(theta["log_lr"]) * sched.factor(theta, k, t)


def _count0() -> jax.Array:
    return jnp.zeros((), jnp.int32)


def _theta(sched: schedules.Schedule, **entries) -> dict[str, jax.Array]:
    theta = {k: f32(v) for k, v in entries.items()}
    theta.update(sched.init())
    return theta


def learnable_sgd(learning_rate: float = 0.1, schedule: str | schedules.Schedule | None = None,
                  schedule_options: Mapping[str, Any] | None = None) -> LearnedOptimizer:
    """SGD with a learnable (log) learning rate and schedule; theta = ``{log_lr, ...}``."""
    lr = check_positive("learning_rate", learning_rate)
    sched = schedules.get(schedule, **dict(schedule_options or {}))
    name = _name("sgd", sched)

    def init(key: jax.Array) -> dict:
        del key
        return _theta(sched, log_lr=math.log(lr))

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def update(updates, state, params=None, **extra):
            del params
            th = _promoted(theta, updates)
            a = _rate(th, sched, state.count, extra, num_steps)
            out = jax.tree.map(lambda g: (-a * g).astype(g.dtype), updates)
            return out, SGDState(optax.safe_increment(state.count))

        return optax.GradientTransformationExtraArgs(lambda p: SGDState(_count0()), update)

    return LearnedOptimizer(init, optimizer, name)


def learnable_momentum(learning_rate: float = 0.1, momentum: float = 0.9, nesterov: bool = False,
                       schedule: str | schedules.Schedule | None = None,
                       schedule_options: Mapping[str, Any] | None = None) -> LearnedOptimizer:
    """Heavy-ball momentum (``optax.sgd(lr, momentum)``); theta = ``{log_lr, logit_momentum}``."""
    lr = check_positive("learning_rate", learning_rate)
    mom = check_decay("momentum", momentum)
    sched = schedules.get(schedule, **dict(schedule_options or {}))
    name = _name("momentum", sched)

    def init(key: jax.Array) -> dict:
        del key
        return _theta(sched, log_lr=math.log(lr), logit_momentum=logit(mom))

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def update(updates, state, params=None, **extra):
            del params
            th = _promoted(theta, updates)
            mu, _ = decay_from_logit(th["logit_momentum"])
            a = _rate(th, sched, state.count, extra, num_steps)
            trace = jax.tree.map(lambda g, t: (g + mu * t).astype(t.dtype), updates, state.trace)
            if nesterov:
                direction = jax.tree.map(lambda g, t: g + mu * t, updates, trace)
            else:
                direction = trace
            out = jax.tree.map(lambda d, g: (-a * d).astype(g.dtype), direction, updates)
            return out, MomentumState(optax.safe_increment(state.count), trace)

        def init_state(params):
            return MomentumState(_count0(), _zeros_like(params))

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, name)


def learnable_adam(learning_rate: float = 1e-3, b1: float = 0.9, b2: float = 0.999,
                   eps: float = 1e-8, eps_root: float = 0.0,
                   schedule: str | schedules.Schedule | None = None,
                   schedule_options: Mapping[str, Any] | None = None) -> LearnedOptimizer:
    """Adam with learnable ``log_lr, logit_b1, logit_b2, log_eps`` (and schedule).

    At the defaults and the constant schedule it follows ``optax.adam(1e-3)`` step for step
    (up to float32 rounding of ``exp``/``sigmoid``). ``eps_root`` is static.
    """
    lr = check_positive("learning_rate", learning_rate)
    b1 = check_decay("b1", b1)
    b2 = check_decay("b2", b2)
    eps = check_positive("eps", eps)
    eps_root = float(eps_root)
    if eps_root < 0:
        raise ValueError(f"eps_root: must be >= 0, got {eps_root!r}")
    sched = schedules.get(schedule, **dict(schedule_options or {}))
    name = _name("adam", sched)

    def init(key: jax.Array) -> dict:
        del key
        return _theta(sched, log_lr=math.log(lr), logit_b1=logit(b1), logit_b2=logit(b2),
                      log_eps=math.log(eps))

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def update(updates, state, params=None, **extra):
            del params
            th = _promoted(theta, updates)
            d1, o1 = decay_from_logit(th["logit_b1"])
            d2, o2 = decay_from_logit(th["logit_b2"])
            e = jnp.exp(th["log_eps"])
            a = _rate(th, sched, state.count, extra, num_steps)
            mu = jax.tree.map(lambda g, m: (o1 * g + d1 * m).astype(m.dtype),
                              updates, state.mu)
            nu = jax.tree.map(lambda g, v: (o2 * (g * g) + d2 * v).astype(v.dtype),
                              updates, state.nu)
            n = optax.safe_increment(state.count)
            c1 = 1 - d1**n
            c2 = 1 - d2**n

            def step(m, v, g):
                u = (m / c1) / (safe_sqrt(v / c2 + eps_root) + e)
                return (-a * u).astype(g.dtype)

            return jax.tree.map(step, mu, nu, updates), AdamState(n, mu, nu)

        def init_state(params):
            return AdamState(_count0(), _zeros_like(params), _zeros_like(params))

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, name)


def _name(base: str, sched: schedules.Schedule) -> str:
    return base if sched.name == "constant" else f"{base}_{sched.name}"
