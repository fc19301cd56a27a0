"""Plain-JAX layers for learned optimizers: dense and LSTM cells on ``[batch, features]``.

Parameters are dicts of float32 arrays (part of theta). Shapes: ``x: [B, I]``, ``h, c: [B, H]``.

LSTM (Hochreiter & Schmidhuber 1997, the variant with a forget-gate bias of 1):

    [i, f, z, o] = x W_x + h W_h + b,                          (each [B, H])
    c' = sigmoid(f) * c + sigmoid(i) * tanh(z),    h' = sigmoid(o) * tanh(c').

Initialisers take standard-normal arrays drawn by :func:`normals`: one random draw for all
weights of a model, because every ``jax.random.normal`` call inside ``jit`` is a separate
threefry computation to compile (about a second each on a 2-core CPU).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp


def normals(key: jax.Array, shapes: Sequence[tuple[int, ...]]) -> list[jax.Array]:
    """Independent ``N(0, 1)`` float32 arrays of ``shapes``, from a single draw."""
    sizes = [math.prod(s) for s in shapes]
    z = jax.random.normal(key, (sum(sizes),), jnp.float32)
    out, start = [], 0
    for s, n in zip(shapes, sizes, strict=True):
        out.append(z[start:start + n].reshape(s))
        start += n
    return out


def dense_shapes(num_in: int, num_out: int) -> list[tuple[int, ...]]:
    return [(num_in, num_out)]


def dense_init(z: Sequence[jax.Array], scale: float = 1.0) -> dict:
    """``{"w": z * scale / sqrt(num_in) [I, O], "b": zeros [O]}`` (LeCun normal)."""
    (w,) = z
    return {"w": w * (scale / math.sqrt(w.shape[0])), "b": jnp.zeros((w.shape[1],), jnp.float32)}


def dense(params: dict, x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"][None, :]


def lstm_shapes(num_in: int, hidden: int) -> list[tuple[int, ...]]:
    return [(num_in, 4 * hidden), (hidden, 4 * hidden)]


def lstm_init(z: Sequence[jax.Array]) -> dict:
    """``{"wx": [I, 4H], "wh": [H, 4H], "b": [4H]}`` (LeCun normal, forget-gate bias 1)."""
    zx, zh = z
    hidden = zh.shape[0]
    b = jnp.zeros((4 * hidden,), jnp.float32).at[hidden:2 * hidden].set(1.0)
    return {"wx": zx / math.sqrt(zx.shape[0]), "wh": zh / math.sqrt(hidden), "b": b}


def lstm(params: dict, x: jax.Array, h: jax.Array, c: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One LSTM step; returns ``(h', c')``."""
    gates = x @ params["wx"] + h @ params["wh"] + params["b"][None, :]
    i, f, z, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(z)
    return jax.nn.sigmoid(o) * jnp.tanh(c), c
