"""Dai et al. (2022)'s measures of how much in-context learning (ICL) behaves like fine-tuning.

Three settings answer the same query: ZSL (zero-shot: the query alone, original weights), ICL
(demonstrations in the context, original weights) and FT (the query alone, weights fine-tuned
by gradient descent on the demonstrations). Per query example:

* **Rec2FTP** (recall to fine-tuning predictions): among the queries FT predicts correctly and
  ZSL does not, the fraction ICL also predicts correctly (in %).
* **SimAOU** (similarity of attention output updates): with ``h_X^l`` the attention-layer
  output at the last query token in layer ``l``, ``cos(h_ICL - h_ZSL, h_FT - h_ZSL)``,
  averaged over layers; **random SimAOU** replaces the FT update by a random Gaussian vector.
* **SimAM** (similarity of attention maps): with ``m_X^{l,h}`` the pre-softmax attention
  scores of the last query token over the *query's own* tokens (ICL's scores to demonstration
  tokens are dropped), ``cos(m_ICL, m_FT)`` averaged over heads and layers; **ZSL SimAM** is
  ``cos(m_ICL, m_ZSL)``, the baseline it should beat.

Functions take arrays with the compared axis last and average over every leading axis
(layers, heads, examples) the caller passes in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def cosine(a: jax.Array, b: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Cosine similarity along the last axis (``0`` where either vector is zero)."""
    if a.shape != b.shape:
        raise ValueError(f"cosine: shapes differ, {a.shape} vs {b.shape}")
    num = jnp.sum(a * b, -1)
    den = jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1)
    return jnp.where(den > eps, num / jnp.maximum(den, eps), 0.0)


def rec2ftp(icl_correct: jax.Array, ft_correct: jax.Array,
            zsl_correct: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(Rec2FTP in %, number of FT-but-not-ZSL-correct queries)`` over all given queries."""
    target = ft_correct & ~zsl_correct
    count = jnp.sum(target)
    hits = jnp.sum(target & icl_correct)
    return 100.0 * hits / jnp.maximum(count, 1), count


def simaou(h_icl: jax.Array, h_ft: jax.Array, h_zsl: jax.Array) -> jax.Array:
    """Mean ``cos(h_ICL - h_ZSL, h_FT - h_ZSL)`` over every leading axis."""
    return jnp.mean(cosine(h_icl - h_zsl, h_ft - h_zsl))


def random_simaou(key: jax.Array, h_icl: jax.Array, h_zsl: jax.Array) -> jax.Array:
    """Mean cosine of the ICL update with a random (standard normal) update: the baseline."""
    return jnp.mean(cosine(h_icl - h_zsl, jax.random.normal(key, h_icl.shape, h_icl.dtype)))


def simam(m_icl: jax.Array, m_other: jax.Array) -> jax.Array:
    """Mean ``cos(m_ICL, m_other)`` of attention maps over the query's own tokens."""
    return jnp.mean(cosine(m_icl, m_other))
