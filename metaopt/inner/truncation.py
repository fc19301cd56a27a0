"""Truncation schedules: how long each inner episode lasts, and where tasks start.

A schedule is ``sample(key) -> length`` (an int32 scalar, the number of inner steps of a new
episode). The inner problem samples a fresh length every time a task resets, so episodes of
varying length are possible inside one compiled unroll.

* :func:`constant` -- every episode has ``length`` steps.
* :func:`log_uniform` -- ``length = floor(exp(u))``, ``u ~ U(log min, log max)``, the schedule
  of Metz et al. 2020 (short episodes common, long ones present), clipped to ``[min, max]``.

:data:`REGISTRY` holds both by name (``constant``: ``length``; ``log_uniform``: ``min_length``,
``max_length``), so a run config names its episodes as a spec.

Staggered starts (:data:`STAGGERS`) keep a batch of tasks from resetting in lockstep: task
``i`` of ``n`` begins its first episode at iteration ``s_i`` (so that episode is shorter):

* ``"none"``: ``s_i = 0``;
* ``"even"``: ``s_i = floor(i * L_i / n)`` with ``L_i`` its episode length;
* ``"uniform"``: ``s_i ~ U{0, ..., L_i - 1}``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.spec import Registry

STAGGERS = ("none", "even", "uniform")


class TruncationSchedule(NamedTuple):
    """``sample(key) -> int32[]`` episode length; ``max_length`` bounds it (static)."""

    sample: Callable[[jax.Array], jax.Array]
    max_length: int
    name: str


def _check_length(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer (>= 1), got {value!r}")
    return value


def constant(length: int) -> TruncationSchedule:
    """Every episode lasts ``length`` inner steps."""
    length = _check_length("length", length)
    return TruncationSchedule(
        sample=lambda key: jnp.asarray(length, jnp.int32), max_length=length, name="constant"
    )


def log_uniform(min_length: int, max_length: int) -> TruncationSchedule:
    """Episode lengths log-uniform on ``[min_length, max_length]``."""
    lo = _check_length("min_length", min_length)
    hi = _check_length("max_length", max_length)
    if lo > hi:
        raise ValueError(f"min_length: {lo} must not exceed max_length ({hi})")

    def sample(key: jax.Array) -> jax.Array:
        u = jax.random.uniform(key, (), minval=math.log(lo), maxval=math.log(hi + 1))
        return jnp.clip(jnp.floor(jnp.exp(u)), lo, hi).astype(jnp.int32)

    return TruncationSchedule(sample=sample, max_length=hi, name="log_uniform")


REGISTRY = Registry("schedule", noun="truncation schedule")
REGISTRY.register("constant", constant)
REGISTRY.register("log_uniform", log_uniform)


def start_offsets(key: jax.Array, lengths: jax.Array, stagger: str) -> jax.Array:
    """First-episode start iterations for ``n = lengths.shape[0]`` tasks. Shape ``[n]``, int32."""
    if stagger not in STAGGERS:
        raise ValueError(f"stagger: unknown value {stagger!r}; allowed values are {list(STAGGERS)}")
    n = lengths.shape[0]
    if stagger == "none":
        return jnp.zeros((n,), jnp.int32)
    if stagger == "even":
        return (jnp.arange(n, dtype=jnp.int32) * lengths) // n
    return jax.random.randint(key, (n,), 0, lengths).astype(jnp.int32)
