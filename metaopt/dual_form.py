"""The dual form of a linear layer trained by gradient descent: unnormalized linear attention.

A linear layer ``h = W x`` (``W`` of shape ``(d_out, d_in)``) inside any differentiable loss
``L(h_1, ..., h_n)`` (MSE, cross-entropy, a fixed nonlinear head on top, ...) gets the gradient
``dL/dW = sum_i e_i x_i^T`` with the error signals ``e_i = dL/dh_i``. So ``T`` steps of
(minibatch, sequential or full-batch) gradient descent with learning rate ``lr`` give

    W_T x = W_0 x + sum_n (-lr e_n) (x_n^T x) = W_0 x + Attention(K = X, V = -lr E, q = x),

where ``n`` runs over every (step, example) pair the layer was trained on: the *primal form*
(a weight matrix) equals the *dual form* (``W_0`` plus unnormalized linear attention of the
query ``x`` over a key-value memory of the training inputs and their errors; the seed's
corollary, Irie, Csordas & Schmidhuber 2022; Dai et al. 2022, eq. 6-8). Errors are taken at
the weights of the step they were computed in, so the identity is exact, not a linearization.

**Momentum.** Heavy-ball GD ``m_t = beta m_{t-1} + g_t``, ``W_{t+1} = W_t - lr m_t`` gives

    W_T x = W_0 x + sum_{t<T} sum_{s<=t} beta^{t-s} Attention(X_s, -lr E_s, x)
          = W_0 x + sum_n c_n (-lr e_n)(x_n^T x),   c_n = (1 - beta^{T - s_n}) / (1 - beta),

i.e. attention whose values are the exponential moving average of the values stored so far
("attention with momentum", the EMA-of-values form of the seed and of Dai et al. Sec. 5);
:func:`momentum_attention` computes it by that EMA recursion, :func:`dual_apply` by the closed
form with the coefficients ``c_n``. The tests check primal == both duals to 1e-10 in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

LayerLoss = Callable[[jax.Array, jax.Array], jax.Array]  # (h (B, d_out), batch index) -> scalar


class Memory(NamedTuple):
    """Everything gradient descent showed the layer: ``keys (T, B, d_in)`` the inputs,
    ``errors (T, B, d_out)`` the error signals ``dL_t/dh`` at step ``t``'s weights."""

    keys: jax.Array
    errors: jax.Array


def linear_attention(keys: jax.Array, values: jax.Array, query: jax.Array) -> jax.Array:
    """Unnormalized linear dot attention ``sum_t v_t (k_t . q)`` (the seed's eq. 1).

    keys ``(N, d_in)``, values ``(N, d_out)``, query ``(..., d_in)`` -> ``(..., d_out)``.
    """
    if keys.ndim != 2 or values.ndim != 2 or keys.shape[0] != values.shape[0]:
        raise ValueError(f"keys (N, d_in) and values (N, d_out) must pair up; got keys "
                         f"{keys.shape}, values {values.shape}")
    if query.shape[-1] != keys.shape[-1]:
        raise ValueError(f"query's last axis {query.shape[-1]} != key size {keys.shape[-1]}")
    return (query @ keys.T) @ values


def train_primal(w0: jax.Array, inputs: jax.Array, loss: LayerLoss, lr: float,
                 beta: float = 0.0) -> tuple[jax.Array, Memory]:
    """``T`` steps of GD (heavy-ball momentum ``beta``) on the layer ``h = W x``.

    ``inputs (T, B, d_in)``: the minibatch the layer sees at each step (``B = 1``: per-example
    sequential GD; the same full set each step: batch GD). ``loss(h, t)`` is the step-``t`` loss
    of the layer outputs ``h (B, d_out)`` (anything downstream of the layer lives inside it).
    Returns ``(W_T, Memory)``; the memory's errors are ``dL_t/dh`` at ``W_t``.
    """
    if inputs.ndim != 3 or inputs.shape[-1] != w0.shape[1]:
        raise ValueError(f"inputs must be (T, B, d_in={w0.shape[1]}); got {inputs.shape}")

    def step(carry, xs):
        w, m = carry
        x, t = xs
        e = jax.grad(loss)(x @ w.T, t)  # (B, d_out): the layer's error signals
        m = beta * m + e.T @ x  # dL/dW = sum_i e_i x_i^T
        return (w - lr * m, m), e

    steps = jnp.arange(inputs.shape[0])
    (w, _), errors = jax.lax.scan(step, (w0, jnp.zeros_like(w0)), (inputs, steps))
    return w, Memory(inputs, errors)


def momentum_coefficients(num_steps: int, beta, dtype=jnp.float32) -> jax.Array:
    """``c_s = sum_{t=s}^{T-1} beta^{t-s} = (1 - beta^{T-s}) / (1 - beta)``, ``s = 0..T-1``
    (all ones at ``beta = 0``; computed as a partial geometric sum, so any ``beta`` works)."""
    partial = jnp.cumsum(jnp.asarray(beta, dtype) ** jnp.arange(num_steps, dtype=dtype))
    return partial[::-1]


def dual_apply(w0: jax.Array, memory: Memory, x: jax.Array, lr: float,
               beta: float = 0.0) -> jax.Array:
    """The dual form: ``W_0 x + Attention(keys, -lr c_s e, x)`` over the whole memory.

    ``x (..., d_in) -> (..., d_out)``; equals ``W_T x`` of :func:`train_primal` exactly.
    """
    steps, batch, d_in = memory.keys.shape
    c = momentum_coefficients(steps, beta, memory.errors.dtype)
    values = -lr * c[:, None, None] * memory.errors
    return x @ w0.T + linear_attention(memory.keys.reshape(steps * batch, d_in),
                                       values.reshape(steps * batch, -1), x)


def momentum_attention(w0: jax.Array, memory: Memory, x: jax.Array, lr: float,
                       beta: float) -> jax.Array:
    """Attention with momentum in its recursive form: the per-step attention outputs
    ``a_t = Attention(X_t, -lr E_t, x)`` are accumulated as an EMA ``m_t = beta m_{t-1} + a_t``
    and summed, ``W_0 x + sum_t m_t`` (the EMA of values, read out at the query ``x``)."""

    def step(m_sum, kv):
        k, e = kv
        m, total = m_sum
        m = beta * m + linear_attention(k, -lr * e, x)
        return (m, total + m), None

    zero = jnp.zeros(x.shape[:-1] + (w0.shape[0],), x.dtype)
    (_, total), _ = jax.lax.scan(step, (zero, zero), (memory.keys, memory.errors))
    return x @ w0.T + total
