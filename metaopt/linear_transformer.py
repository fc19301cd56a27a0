"""A small causal linear-attention transformer, optionally with momentum attention (MoAttn).

Each layer is pre-LayerNorm multi-head *unnormalized* linear self-attention with a residual:

    h <- h + W_O [ sum_{i<=j} v_i (k_i . q_j) / N_0  +  mu * sum_{i<j} lambda^{j-i} v_i ]_heads,

``q, k, v = W_Q u, W_K u, W_V u`` of ``u = LN(h)`` (no softmax: the scores ``k_i . q_j`` are the
attention map, scaled by a fixed constant ``1 / N_0`` so magnitudes stay bounded; a constant
does not change the dual-form reading of :mod:`metaopt.dual_form`). The second term is
momentum attention (Dai et al. 2022, Sec. 5 "MoAttn": ``MoAttn(V, K, q_N) = Attention(V, K,
q_N) + sum_{i=1}^{N-1} lambda^{N-i} v_i``, the EMA of the earlier values, by analogy with GD
with momentum); ``momentum = 0`` is plain attention. Tokens ``(B, N, d_tok)`` are embedded by
a Dense layer and read out by a Dense layer to one number per position.

``__call__`` returns ``(pred (B, N), aux)`` with ``aux["attn_out"]`` the per-layer attention
outputs ``(L, B, N, dim)`` (the "attention output representations" of Dai et al.'s SimAOU)
and ``aux["scores"]`` the per-layer maps ``(L, B, heads, N, N)`` (query position, key
position; SimAM). Parameters are named ``layer_{l}/{query,key,value,out}/kernel`` so a
fine-tuner can pick the key and value projections.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def causal_ema_matrix(n: int, lam: float, dtype=jnp.float32) -> jax.Array:
    """``M[j, i] = lam^{j-i}`` for ``i < j``, else 0: ``M @ V`` is MoAttn's EMA of values."""
    j, i = jnp.arange(n)[:, None], jnp.arange(n)[None, :]
    gap = (j - i).astype(dtype)
    return jnp.where(i < j, jnp.asarray(lam, dtype) ** jnp.maximum(gap, 0), 0.0)


class LinearAttention(nn.Module):
    """Causal multi-head unnormalized linear attention (+ optional momentum term)."""

    dim: int
    heads: int
    scale: float
    momentum: float = 0.0

    @nn.compact
    def __call__(self, u: jax.Array) -> tuple[jax.Array, jax.Array]:
        if self.dim % self.heads:
            raise ValueError(f"dim {self.dim} must be divisible by heads {self.heads}")
        b, n, _ = u.shape
        hd = self.dim // self.heads

        def proj(name):
            return nn.Dense(self.dim, use_bias=False, name=name)(u).reshape(b, n, self.heads, hd)

        q, k, v = proj("query"), proj("key"), proj("value")
        scores = jnp.einsum("bjhd,bihd->bhji", q, k)  # (B, H, query j, key i)
        causal = jnp.tril(jnp.ones((n, n), bool))
        mixed = jnp.where(causal, scores, 0.0) * self.scale
        out = jnp.einsum("bhji,bihd->bjhd", mixed, v)
        if self.momentum:
            out = out + jnp.einsum("ji,bihd->bjhd", causal_ema_matrix(n, self.momentum, u.dtype),
                                   v)
        out = nn.Dense(self.dim, use_bias=False, name="out")(out.reshape(b, n, self.dim))
        return out, scores


class LinearTransformer(nn.Module):
    """Embed -> ``layers`` x (pre-LN linear attention + residual) -> LN -> Dense(1)."""

    layers: int
    dim: int
    heads: int
    scale: float = 1.0 / 32
    momentum: float = 0.0

    @nn.compact
    def __call__(self, tokens: jax.Array) -> tuple[jax.Array, dict]:
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be (batch, length, features); got {tokens.shape}")
        h = nn.Dense(self.dim, name="embed")(tokens)
        outs, maps = [], []
        for layer in range(self.layers):
            attn = LinearAttention(self.dim, self.heads, self.scale, self.momentum,
                                   name=f"layer_{layer}")
            a, s = attn(nn.LayerNorm(name=f"norm_{layer}")(h))
            h = h + a
            outs.append(a)
            maps.append(s)
        pred = nn.Dense(1, name="readout")(nn.LayerNorm(name="norm_out")(h))[..., 0]
        return pred, {"attn_out": jnp.stack(outs), "scores": jnp.stack(maps)}
