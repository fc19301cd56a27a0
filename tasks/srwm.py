"""A self-referential weight matrix (SRWM; Irie, Schlag, Csordás & Schmidhuber 2022, "A Modern
Self-Referential Weight Matrix That Learns to Modify Itself"; after Schmidhuber 1993, "A
neural network that embeds its own meta-levels").

One matrix per head, ``W in R^{(d_out + 2 d + 1) x d}``, produces from its input ``x_t in R^d``
its output *and* the key, query and learning rate of its own update:

    [y_t, k_t, q_t, beta_t] = W_{t-1} x_t                       (y: d_out, k, q: d, beta: 1)
    v_t     = W_{t-1} phi(q_t)                                   (the value it wants to store)
    vbar_t  = W_{t-1} phi(k_t)                                   (what it stores at k_t now)
    W_t     = W_{t-1} + sigmoid(beta_t) (v_t - vbar_t) (x) phi(k_t),        phi = softmax

a delta rule whose value, key and step size are all the matrix's own outputs: every row,
including the rows that generate ``k``, ``q`` and ``beta``, is rewritten (Irie et al.'s
eqs. 5-8, with one scalar ``beta`` per head; their code also has one ``beta`` per row group).
``W_0`` is slow weights learned by gradient descent (meta-training by backprop through the
sequence); the ``W_t`` are the fast weights of one sequence.

Heads: ``x in R^{H d}`` is split into ``H`` chunks, each with its own matrix (``W [H, R, d]``,
``R = d_out + 2 d + 1``); outputs are concatenated (``[H d_out]``).

* :func:`srwm_init` -- ``W_0``, Gaussian ``N(0, scale^2/d)`` entries;
* :func:`srwm_route` -- ``W_0`` plus a routing of its key and query rows to chosen input
  coordinates (keys read one part of the input, queries another; see its docstring);
* :func:`srwm_step` -- ``(W_{t-1}, x_t) -> (y_t, W_t)``, for ``lax.scan``;
* :func:`srwm_scan` -- a whole sequence ``xs [T, H d] -> (ys [T, H d_out], W_T)``;
* :func:`srwm_read` -- ``y = W^y x`` without the self-update (e.g. queries after the support
  set, each read independently so queries cannot inform each other).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _dims(w: jax.Array) -> tuple[int, int, int]:
    """``(heads, d, d_out)`` of ``w [H, d_out + 2 d + 1, d]``."""
    if w.ndim != 3 or w.shape[1] < 2 * w.shape[2] + 2:
        raise ValueError(f"w: expected [heads, d_out + 2 d + 1, d] with d_out >= 1, got shape "
                         f"{w.shape}")
    heads, rows, d = w.shape
    return heads, d, rows - 2 * d - 1


def srwm_init(key: jax.Array, d_model: int, d_out: int, heads: int = 1, scale: float = 1.0,
              dtype=jnp.float32) -> jax.Array:
    """``W_0 [heads, d_out/heads + 2 d + 1, d]`` with ``d = d_model / heads``, entries
    ``N(0, scale^2 / d)`` (a larger ``scale`` makes the softmax keys and queries sharper)."""
    for field, v in (("d_model", d_model), ("d_out", d_out), ("heads", heads)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field}: must be a positive integer, got {v!r}")
    if d_model % heads or d_out % heads:
        raise ValueError(f"heads: must divide d_model={d_model} and d_out={d_out}, got {heads}")
    d, o = d_model // heads, d_out // heads
    return scale * jax.random.normal(key, (heads, o + 2 * d + 1, d), dtype) / jnp.sqrt(d)


def srwm_route(w: jax.Array, key_cols: jax.Array, query_cols: jax.Array,
               gain: float = 1.0) -> jax.Array:
    """``W_0`` plus ``gain diag(key_cols)`` on its key rows, ``gain diag(query_cols)`` on its
    query rows (every head).

    ``key_cols``, ``query_cols``: ``[d]`` 0/1 masks of input coordinates. From
    ``W^k = W^q = 0`` the first step's key is ``k = gain key_cols * x`` (the softmax key
    ``phi(k)`` is a sharpened read of those coordinates) and its query
    ``q = gain query_cols * x``. Why it matters: from a random ``W_0`` the value
    ``v - vbar = W (phi(q) - phi(k))`` of the self-update is nearly independent of the input
    (near-uniform softmaxes), so meta-training starts on a saddle where the sequence barely
    changes the matrix. With keys routed to an item's features and queries to its label, the
    update ``W += sigmoid(beta) W (phi(q) - phi(k)) phi(k)^T`` stores at the item's feature key
    a value that depends on its label from the first outer step on (a starting point for
    meta-training; these rows keep rewriting themselves like all others).
    """
    heads, d, d_out = _dims(w)
    for field, m in (("key_cols", key_cols), ("query_cols", query_cols)):
        if jnp.shape(m) != (d,):
            raise ValueError(f"{field}: expected shape ({d},) for w of shape {w.shape}, got "
                             f"{jnp.shape(m)}")
    diag_k = gain * jnp.diag(jnp.asarray(key_cols, w.dtype))
    diag_q = gain * jnp.diag(jnp.asarray(query_cols, w.dtype))
    w = w.at[:, d_out:d_out + d].add(diag_k[None])
    return w.at[:, d_out + d:d_out + 2 * d].add(diag_q[None])


def _split_heads(w: jax.Array, x: jax.Array) -> jax.Array:
    heads, d, _ = _dims(w)
    if x.shape != (heads * d,):
        raise ValueError(f"x: expected shape ({heads * d},) for w of shape {w.shape}, got "
                         f"{x.shape}")
    return x.reshape(heads, d)


def srwm_step(w: jax.Array, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """One self-referential step (module docstring): ``(y_t [H d_out], W_t)``."""
    heads, d, d_out = _dims(w)
    xh = _split_heads(w, x)
    out = jnp.einsum("hrd,hd->hr", w, xh)  # [H, R]
    y, k, q, beta = jnp.split(out, [d_out, d_out + d, d_out + 2 * d], axis=1)
    phi_k, phi_q = jax.nn.softmax(k, axis=-1), jax.nn.softmax(q, axis=-1)  # [H, d]
    v = jnp.einsum("hrd,hd->hr", w, phi_q)
    v_bar = jnp.einsum("hrd,hd->hr", w, phi_k)
    delta = jax.nn.sigmoid(beta) * (v - v_bar)  # [H, R]; beta [H, 1]
    w_new = w + delta[:, :, None] * phi_k[:, None, :]
    return y.reshape(heads * d_out), w_new


def srwm_scan(w0: jax.Array, xs: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Run a sequence ``xs [T, H d]``: ``(ys [T, H d_out], W_T)``."""
    w_t, ys = jax.lax.scan(lambda w, x: srwm_step(w, x)[::-1], w0, xs)
    return ys, w_t


def srwm_read(w: jax.Array, x: jax.Array) -> jax.Array:
    """``y = W^y x`` (the output rows only, no update): ``x [H d] -> [H d_out]``."""
    heads, _, d_out = _dims(w)
    return jnp.einsum("hrd,hd->hr", w[:, :d_out], _split_heads(w, x)).reshape(heads * d_out)
