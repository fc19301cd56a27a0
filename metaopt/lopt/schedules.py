"""Learnable learning-rate schedules for the hand-designed optimizers of :mod:`.hparam`.

A :class:`Schedule` multiplies the base learning rate ``a_0 = exp(theta["log_lr"])``:

    a_k = a_0 * factor(theta, k, T)

where ``k`` is the step within the episode and ``T`` the step budget. The optimizers take
``k`` from the ``iteration`` extra arg when given and otherwise from their internal update
count (0 for the first update); ``T`` from the ``num_steps`` extra arg, else the static
default budget (see :func:`metaopt.lopt.base.step_and_budget`). ``init()`` returns the
schedule's own entries of theta (merged into the optimizer's flat theta dict), all float32.
``factor`` is computed in the dtype of ``k`` and theta (the optimizer passes both in its
compute dtype): float64 in, float64 out, no float32 constant in between.

Schedules (``SCHEDULES``):

* ``constant``: ``factor = 1``.
* ``inverse_power`` (Wu, Ren, Liao & Grosse 2018, "Understanding short-horizon bias"):
  ``factor = (1 + k/K)^(-beta)`` with ``theta = {log_K, beta}`` (``beta`` unconstrained;
  ``beta < 0`` grows the rate).
* ``exponential``: ``factor = exp(-k / tau)``, ``theta = {log_tau}``.
* ``cosine``: ``factor = f + (1 - f) (1 + cos(pi min(k/T, 1))) / 2`` with the floor fraction
  ``f = sigmoid(theta["logit_floor"])``; relative to the budget ``T``.
* ``piecewise``: ``log factor`` linear between ``n`` knots evenly spaced on ``k/T in [0, 1]``,
  ``theta = {log_factors: float32[n]}`` (initialised to 0: constant).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.lopt.base import check_positive, f32, logit

SCHEDULES = ("constant", "inverse_power", "exponential", "cosine", "piecewise")


class Schedule(NamedTuple):
    """``init() -> dict`` of theta entries; ``factor(theta, k, T) -> []`` in ``k``'s dtype."""

    init: Callable[[], dict[str, jax.Array]]
    factor: Callable[[dict, jax.Array, jax.Array], jax.Array]
    name: str


def constant() -> Schedule:
    """No decay: ``factor = 1``."""
    return Schedule(init=lambda: {}, factor=lambda theta, k, t: jnp.ones_like(k),
                    name="constant")


def inverse_power(decay_steps: float = 100.0, power: float = 1.0) -> Schedule:
    """``(1 + k/K)^(-beta)`` of Wu et al. 2018 with ``K = decay_steps``, ``beta = power``.

    ``theta = {"log_K": log K, "beta": beta}``; computed as ``exp(-beta log1p(k/K))`` so that
    ``d/d beta`` and ``d/d log K`` are smooth.
    """
    k0 = check_positive("decay_steps", decay_steps)
    power = float(power)

    def factor(theta, k, t):
        del t
        return jnp.exp(-theta["beta"] * jnp.log1p(k * jnp.exp(-theta["log_K"])))

    return Schedule(init=lambda: {"log_K": f32(math.log(k0)), "beta": f32(power)},
                    factor=factor, name="inverse_power")


def exponential(time_scale: float = 1000.0) -> Schedule:
    """``exp(-k / tau)`` with ``theta = {"log_tau": log tau}``."""
    tau = check_positive("time_scale", time_scale)
    return Schedule(init=lambda: {"log_tau": f32(math.log(tau))},
                    factor=lambda theta, k, t: jnp.exp(-k * jnp.exp(-theta["log_tau"])),
                    name="exponential")


def cosine(floor: float = 0.01) -> Schedule:
    """Cosine decay over the budget ``T`` to ``floor * a_0``; ``theta = {"logit_floor"}``."""
    floor = float(floor)
    if not 0.0 < floor < 1.0:
        raise ValueError(f"floor: must lie strictly between 0 and 1, got {floor!r}")

    def factor(theta, k, t):
        f = jax.nn.sigmoid(theta["logit_floor"])
        frac = jnp.clip(k / t, 0.0, 1.0)
        return f + (1.0 - f) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    return Schedule(init=lambda: {"logit_floor": logit(floor)}, factor=factor, name="cosine")


def piecewise(num_knots: int = 5) -> Schedule:
    """Learnable log-factors at ``num_knots`` evenly spaced fractions of the budget."""
    if isinstance(num_knots, bool) or not isinstance(num_knots, int) or num_knots < 2:
        raise ValueError(f"num_knots: must be an int >= 2, got {num_knots!r}")

    def factor(theta, k, t):
        frac = jnp.clip(k / t, 0.0, 1.0)
        knots = jnp.linspace(0.0, 1.0, num_knots, dtype=frac.dtype)
        return jnp.exp(jnp.interp(frac, knots, theta["log_factors"]))

    return Schedule(init=lambda: {"log_factors": jnp.zeros((num_knots,), jnp.float32)},
                    factor=factor, name="piecewise")


_BUILDERS: dict[str, Callable[..., Schedule]] = {
    "constant": constant,
    "inverse_power": inverse_power,
    "exponential": exponential,
    "cosine": cosine,
    "piecewise": piecewise,
}


def get(schedule: str | Schedule | None, **kwargs) -> Schedule:
    """A :class:`Schedule` from itself, ``None`` (constant) or a name in :data:`SCHEDULES`."""
    if schedule is None:
        return constant()
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in _BUILDERS:
        raise ValueError(f"schedule: unknown schedule {schedule!r}; allowed values are "
                         f"{list(SCHEDULES)} or a metaopt.lopt.schedules.Schedule")
    return _BUILDERS[schedule](**kwargs)


def rate(schedule: str | Schedule | None, **kwargs) -> Callable[[dict, jax.Array, jax.Array],
                                                                jax.Array]:
    """``rate(theta, k, T) = exp(theta["log_lr"]) * factor(theta, k, T)``: the step-``k`` rate
    the optimizers of :mod:`.hparam` use, as a function (e.g. for an exact model of training)."""
    sched = get(schedule, **kwargs)

    def fn(theta: dict, k: jax.Array, t: jax.Array) -> jax.Array:
        return jnp.exp(theta["log_lr"]) * sched.factor(theta, k, t)

    return fn


def rates(theta: dict, schedule: str | Schedule | None, num_steps: int, **kwargs) -> jax.Array:
    """The rates ``a_k``, ``k = 0 .. num_steps - 1``, shape ``[num_steps]`` (float32)."""
    fn = rate(schedule, **kwargs)
    t = jnp.asarray(num_steps, jnp.float32)
    return jax.vmap(lambda k: fn(theta, k, t))(jnp.arange(num_steps, dtype=jnp.float32))
