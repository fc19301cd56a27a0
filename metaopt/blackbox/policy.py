"""The RNN black-box optimizer of Chen et al. (2017), "Learning to learn without gradient descent
by gradient descent": an LSTM that proposes the next query from the last query and its value.

    h_t, x_t = RNN_theta(h_{t-1}, x_{t-1}, y_{t-1}),         y_t = f(x_t),

on the unit box ``x in [0, 1]^d``. Here the RNN is a stack of LSTM cells
(:func:`metaopt.lopt.layers.lstm`, ``hidden = (64, 64)`` by default) fed with
``[2 x_{t-1} - 1, clip(y_{t-1}, -y_clip, y_clip)]`` ``[d + 1]``, and a dense read-out squashed into
the box, ``x_t = sigmoid(h_t W + b)``. The optimizer never sees a gradient of ``f``: it is
*trained* by backprop through ``f`` (differentiable training functions), then used on black
boxes. ``y`` is expected on a standardised scale (GP samples have prior variance 1; other
functions are standardised by the caller), and clipped for robustness.

A policy is a NamedTuple of pure functions on explicit state:

* ``init(key) -> theta`` (``{"cells": [...], "out": {"w": [H, d], "b": [d]}}``);
* ``start(theta) -> state`` (zero LSTM states, ``(h, c)`` per layer, each ``[H]``);
* ``propose(theta, state, x, y) -> (x_next [d], state)``.

Batch it with ``vmap`` over functions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.lopt import layers
from metaopt.lopt.base import check_widths

PyTree = Any


class QueryPolicy(NamedTuple):
    """``init(key) -> theta``; ``start(theta) -> state``;
    ``propose(theta, state, x, y) -> (x_next, state)``; ``dim`` the box dimension."""

    init: Callable[[jax.Array], PyTree]
    start: Callable[[PyTree], PyTree]
    propose: Callable[[PyTree, PyTree, jax.Array, jax.Array], tuple[jax.Array, PyTree]]
    dim: int
    name: str = "rnn_blackbox"


def rnn_policy(dim: int, hidden: Sequence[int] = (64, 64), y_clip: float = 5.0) -> QueryPolicy:
    """The LSTM query policy (module docstring) for ``[0, 1]^dim``."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
        raise ValueError(f"dim: must be a positive integer (>= 1), got {dim!r}")
    hidden = check_widths("hidden", hidden)
    if isinstance(y_clip, bool) or not isinstance(y_clip, int | float) or not y_clip > 0:
        raise ValueError(f"y_clip: must be a positive number, got {y_clip!r}")
    sizes = [dim + 1, *hidden]

    def init(key: jax.Array) -> dict:
        shapes = [layers.lstm_shapes(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
        zs = layers.normals(key, [s for pair in shapes for s in pair]
                            + layers.dense_shapes(hidden[-1], dim))
        cells = [layers.lstm_init(zs[2 * i:2 * i + 2]) for i in range(len(hidden))]
        return {"cells": cells, "out": layers.dense_init(zs[-1:], 1.0)}

    def start(theta: dict) -> tuple:
        zeros = tuple(jnp.zeros((1, w), jnp.float32) for w in hidden)
        return zeros, zeros

    def propose(theta: dict, state: tuple, x: jax.Array, y: jax.Array):
        hs, cs = state
        inp = jnp.concatenate([2.0 * x - 1.0, jnp.clip(y, -y_clip, y_clip)[None]])[None, :]
        new_h, new_c = [], []
        for cell, h, c in zip(theta["cells"], hs, cs, strict=True):
            h, c = layers.lstm(cell, inp, h, c)
            new_h.append(h)
            new_c.append(c)
            inp = h
        x_next = jax.nn.sigmoid(layers.dense(theta["out"], inp)[0])
        return x_next, (tuple(new_h), tuple(new_c))

    return QueryPolicy(init, start, propose, dim)
