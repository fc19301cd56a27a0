"""In-context linear classification episodes (sign of a random linear function).

An episode draws a task ``w ~ N(0, I_d)`` and ``K`` demonstrations plus ``M`` queries
``x ~ N(0, I_d)``, labelled ``y = sign(w . x)`` in ``{-1, +1}``: in-context linear regression
onto +-1 targets (Garg et al. 2022; von Oswald et al. 2023 use real-valued ``y = w . x``; the
sign makes "correct" well defined, which Dai et al.'s Rec2FTP needs). Tokens are ``[x, y]``
for a demonstration and ``[x, 0]`` for a query (von Oswald et al.'s format), one token per
example, demonstrations first.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class Episodes(NamedTuple):
    """A batch of episodes: ``demo_x (B, K, d)``, ``demo_y (B, K)``, ``query_x (B, M, d)``,
    ``query_y (B, M)`` with labels in {-1, +1}."""

    demo_x: jax.Array
    demo_y: jax.Array
    query_x: jax.Array
    query_y: jax.Array


def sample_episodes(key: jax.Array, batch: int, dim: int, demos: int,
                    queries: int) -> Episodes:
    """``batch`` independent episodes (a fresh ``w`` each); pure and jittable."""
    for name, v in (("batch", batch), ("dim", dim), ("queries", queries)):
        if v < 1:
            raise ValueError(f"{name} must be >= 1; got {v}")
    if demos < 0:
        raise ValueError(f"demos must be >= 0; got {demos}")
    kw, kx = jax.random.split(key)
    w = jax.random.normal(kw, (batch, dim))
    x = jax.random.normal(kx, (batch, demos + queries, dim))
    y = jnp.where(jnp.einsum("bnd,bd->bn", x, w) >= 0, 1.0, -1.0)
    return Episodes(x[:, :demos], y[:, :demos], x[:, demos:], y[:, demos:])


def tokens(x: jax.Array, y: jax.Array | None = None) -> jax.Array:
    """``[x, y]`` tokens ``(..., n, d + 1)``; ``y = None`` gives query tokens ``[x, 0]``."""
    y = jnp.zeros(x.shape[:-1], x.dtype) if y is None else y
    return jnp.concatenate([x, y[..., None]], axis=-1)


def icl_tokens(ep: Episodes) -> jax.Array:
    """The in-context sequence: demonstrations then queries, ``(B, K + M, d + 1)``."""
    return jnp.concatenate([tokens(ep.demo_x, ep.demo_y), tokens(ep.query_x)], axis=1)
