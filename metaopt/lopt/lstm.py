"""Coordinatewise LSTM learned optimizer (Andrychowicz et al. 2016, "Learning to learn by
gradient descent by gradient descent").

One two-layer LSTM (``hidden = (20, 20)``) is shared by all coordinates of all tensors; each
scalar parameter keeps its own hidden and cell states. Its input is the preprocessed gradient
(their Appendix A, ``p = 10``):

    x(g) = (log|g| / p, sign g)      if |g| >= exp(-p)
         = (-1, exp(p) g)            otherwise                       (x: [n, 2])

and the update of each coordinate is ``u = out_scale * (h_2 W_o + b_o + x k)`` (``h_2`` the
second layer's output). ``x k`` is a learnable linear skip (``skip="sign"``, the default):
``k`` starts at ``(0, -0.1)``, and the output layer starts small (x0.1), so an untrained
optimizer is close to sign-SGD with step ``0.1 * out_scale`` = 1e-3; ``skip="none"`` is the
paper's architecture. ``log|g|`` is computed with a double ``where`` so meta-gradients stay
finite at ``g = 0``.

No extra arg is needed (the LSTM sees only gradients). State: ``(h, c)`` per layer as
``[N, 20]`` over the flat parameter vector of :mod:`.flat` (80 floats per parameter), in the
flat vector's dtype (:attr:`.flat.Layout.dtype`: float32 for float32 parameters, float64 for
float64 ones). The preprocessing runs in that dtype, the LSTM in its promotion with theta's
dtype; a state computed in a wider dtype than it is stored in is cast back to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import flat, layers
from metaopt.lopt.base import (
    DEFAULT_NUM_STEPS,
    LearnedOptimizer,
    check_num_steps,
    check_widths,
    jit_init,
)
from metaopt.lopt.base import check_positive as _positive

SKIPS = ("sign", "none")


class LSTMState(NamedTuple):
    count: jax.Array  # int32[], updates applied so far
    h: tuple  # per layer: [N, hidden] (flat layout dtype), over the flat parameters
    c: tuple  # per layer: [N, hidden]


def preprocess(g: jax.Array, p: float = 10.0) -> jax.Array:
    """Andrychowicz et al.'s log/sign preprocessing: ``[...] -> [..., 2]`` (``g``'s dtype,
    at least float32)."""
    g = g.astype(jnp.promote_types(g.dtype, jnp.float32))
    a = jnp.abs(g)
    big = a >= math.exp(-p)
    log_a = jnp.log(jnp.where(big, a, 1.0))  # double where: finite d/dg at g = 0
    first = jnp.where(big, log_a / p, -1.0)
    second = jnp.where(big, jnp.sign(g), math.exp(p) * g)
    return jnp.stack([first, second], axis=-1)


def lstm_lopt(hidden: Sequence[int] = (20, 20), p: float = 10.0, out_scale: float = 0.01,
              skip: str = "sign") -> LearnedOptimizer:
    """The coordinatewise LSTM optimizer (module docstring).

    theta: ``{"cells": [lstm params per layer], "out": {"w": [H, 1], "b": [1]}[, "skip": [2]]}``.
    """
    hidden = check_widths("hidden", hidden)
    p = _positive("p", p)
    out_scale = _positive("out_scale", out_scale)
    if skip not in SKIPS:
        raise ValueError(f"skip: unknown value {skip!r}; allowed values are {list(SKIPS)}")

    init = jit_init(_init_theta, hidden=hidden, skip=skip)

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        check_num_steps("lstm", num_steps)  # accepted for a uniform interface; unused

        def init_state(params):
            lay = flat.layout(params)
            zeros = tuple(jnp.zeros((lay.total, w), lay.dtype) for w in hidden)
            return LSTMState(jnp.zeros((), jnp.int32), zeros, zeros)

        def update(updates, state, params=None, **extra):
            del params, extra
            lay = flat.layout(updates)
            x = preprocess(flat.flatten(updates, lay), p)  # [N, 2]
            inp, new_h, new_c = x, [], []
            for cell, h, c in zip(theta["cells"], state.h, state.c, strict=True):
                h_new, c_new = layers.lstm(cell, inp, h, c)
                new_h.append(h_new.astype(h.dtype))
                new_c.append(c_new.astype(c.dtype))
                inp = h_new
            out = layers.dense(theta["out"], inp)[:, 0]
            if "skip" in theta:
                out = out + x @ theta["skip"]
            new_state = LSTMState(optax.safe_increment(state.count), tuple(new_h), tuple(new_c))
            return flat.unflatten(out_scale * out, lay), new_state

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, "lstm")


def _init_theta(key: jax.Array, hidden: tuple[int, ...], skip: str) -> dict:
    sizes = [2, *hidden]
    shapes = [layers.lstm_shapes(a, b) for a, b in zip(sizes[:-1], sizes[1:])]
    zs = layers.normals(key, [s for pair in shapes for s in pair]
                        + layers.dense_shapes(hidden[-1], 1))
    cells = [layers.lstm_init(zs[2 * i:2 * i + 2]) for i in range(len(hidden))]
    theta = {"cells": cells,
             "out": layers.dense_init(zs[-1:], 0.1 if skip == "sign" else 1.0)}
    if skip == "sign":
        theta["skip"] = jnp.asarray([0.0, -0.1], jnp.float32)
    return theta
