"""Per-parameter features for learned optimizers, normalized per tensor.

For one parameter tensor ``p`` (any shape) with gradient ``g``, momentum decays ``b_1..b_D``
and second-moment decays ``c_1..c_R`` (``R = 1`` or ``R = D``), the accumulators ``m_i`` and
``v_j`` (each shaped like ``p``) are updated elementwise

    m_i' = b_i m_i + (1 - b_i) g,        v_j' = c_j v_j + (1 - c_j) g^2,

and the raw features (Metz et al. 2019/2020; learned_optimization's MLPLOpt) are

    [g, p, m_1..m_D, sqrt(v_1 + e)..sqrt(v_R + e), m_i / sqrt(v_j(i) + e) (i = 1..D),
     1 / sqrt(v_1 + e)..1 / sqrt(v_R + e)]                             (F = 2 + 2D + 2R)

with ``j(i) = 1`` if ``R = 1`` else ``i`` and ``e`` = :data:`FEATURE_EPS` inside the roots
(finite meta-gradients at ``v = 0``). Each feature ``x`` is then normalized over its tensor,
``x / sqrt(mean_tensor(x^2) + NORM_EPS)``. :func:`second_moment_terms` writes the ``x^2``
directly in the accumulators (``(m/sqrt(v+e))^2 = m^2/(v+e)``...) so that the per-tensor
reduction (:func:`means`, one pass) reads ``g, p, m, v`` once and the features themselves
are never materialized: they are recomputed inside the per-parameter network's fused loop.

Features are lists of arrays shaped like the tensor (never stacked to ``[n, F]`` in the
forward pass): on CPU this keeps the update one elementwise loop per tensor, and the
optimizer state a pytree like the params (concatenating all tensors into one vector costs
several times a copy in XLA:CPU); :mod:`.hierarchical` uses the flat layout instead.

:func:`step_embedding` embeds the step ``k`` relative to the budget ``T``:
``x = clip(k/T, 0, 1)``, ``[sin(pi 2^l x), cos(pi 2^l x)]`` for ``l = 0..L-1`` (``2L`` values).

Dtypes: accumulators have the dtype of their parameter, at least float32
(:func:`~metaopt.lopt.base.state_dtype`); features and statistics are computed in the
accumulators' dtype, the step embedding in the dtype of ``k`` -- float64 parameters give
float64 throughout, float32 ones float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaopt.lopt import flat
from metaopt.lopt.base import state_dtype

FEATURE_EPS = 1e-10
NORM_EPS = 1e-12
SAMPLE_MIN_SIZE = 1 << 16


def num_features(num_mom: int, num_rms: int) -> int:
    """``F`` of :func:`per_param_features` for ``D = num_mom`` and ``R = num_rms``."""
    return 2 + 2 * num_mom + 2 * num_rms


def check_rms_decays(mom_decays: Sequence[float], rms_decays: Sequence[float]) -> None:
    if len(rms_decays) not in (1, len(mom_decays)):
        raise ValueError(f"rms_decays: needs 1 decay or as many as mom_decays "
                         f"({len(mom_decays)}), got {len(rms_decays)}")


def init_accumulators(params, num: int):
    """A zero pytree with leaves ``[num, *p.shape]`` (one row per decay), each of dtype
    :func:`~metaopt.lopt.base.state_dtype` of its parameter (float32 for float32 ``p``)."""
    return jax.tree.map(
        lambda p: jnp.zeros((num, *jnp.shape(p)), state_dtype(jnp.result_type(p))), params)


def update_moments(g: jax.Array, mom: jax.Array, rms: jax.Array, mom_decays: Sequence[float],
                   rms_decays: Sequence[float]) -> tuple[jax.Array, jax.Array]:
    """EMA updates of one tensor's accumulators ``mom``: ``[D, *shape]``, ``rms``: ``[R, *shape]``.

    Stacked per tensor so that each update is one loop reading ``g`` once. Computed and
    returned in the accumulators' dtype (``mom.dtype``, ``rms.dtype``).
    """
    dt = jnp.result_type(mom, rms)
    g = g.astype(dt)[None]
    b = jnp.asarray(mom_decays, dt).reshape((-1,) + (1,) * (g.ndim - 1))
    c = jnp.asarray(rms_decays, dt).reshape((-1,) + (1,) * (g.ndim - 1))
    return b * mom + (1.0 - b) * g, c * rms + (1.0 - c) * jnp.square(g)


def _pair(i: int, num_rms: int) -> int:
    return 0 if num_rms == 1 else i


def per_param_features(g: jax.Array, p: jax.Array, ms: Sequence[jax.Array],
                       vs: Sequence[jax.Array]) -> list[jax.Array]:
    """The ``F`` raw features of one tensor (module docstring), each shaped like it, in the
    accumulators' dtype."""
    dt = jnp.result_type(*ms, *vs)
    g, p = g.astype(dt), p.astype(dt)
    d, r = len(ms), len(vs)
    rs = [jax.lax.rsqrt(v + FEATURE_EPS) for v in vs]
    sq = [(v + FEATURE_EPS) * q for v, q in zip(vs, rs, strict=True)]  # sqrt(v + e)
    return [g, p, *ms, *sq, *(ms[i] * rs[_pair(i, r)] for i in range(d)), *rs]


def second_moment_terms(g: jax.Array, p: jax.Array, ms: Sequence[jax.Array],
                        vs: Sequence[jax.Array]) -> list[jax.Array]:
    """The squares of :func:`per_param_features`, written in the accumulators."""
    dt = jnp.result_type(*ms, *vs)
    g, p = g.astype(dt), p.astype(dt)
    d, r = len(ms), len(vs)
    ms2 = [jnp.square(m) for m in ms]
    inv = [1.0 / (v + FEATURE_EPS) for v in vs]
    return [jnp.square(g), jnp.square(p), *ms2, *(v + FEATURE_EPS for v in vs),
            *(ms2[i] * inv[_pair(i, r)] for i in range(d)), *inv]


def stats_sample(x: jax.Array, stride: int) -> jax.Array:
    """The entries of ``x`` that per-tensor statistics are estimated from.

    Tensors of at least :data:`SAMPLE_MIN_SIZE` entries, with ``stride > 1``: chunks of 128
    contiguous entries, every ``stride``-th chunk (flattened order; a stride coprime with
    powers of two, e.g. 9, cycles through the columns of ``[rows, 2^k]`` matrices) -- about
    ``1/stride`` of the memory traffic and arithmetic of the statistics pass, with a relative
    error of the estimated means around ``sqrt(stride / n)``. Smaller tensors: all of ``x``.
    """
    n = x.size
    if stride <= 1 or n < SAMPLE_MIN_SIZE:
        return x
    return x.reshape(-1)[:n // 128 * 128].reshape(-1, 128)[::stride]


def normalizer_scales(second_moments: jax.Array) -> jax.Array:
    """``rsqrt(mean(x^2) + NORM_EPS)`` from per-tensor second moments (``[..., F]``)."""
    return jax.lax.rsqrt(second_moments + NORM_EPS)


def step_embedding(k: jax.Array, t: jax.Array, num_freqs: int) -> jax.Array:
    """Sinusoidal embedding of ``k / T``: ``[2 * num_freqs]`` in the dtype of ``k / T``."""
    x = jnp.clip(k / t, 0.0, 1.0)
    w = jnp.pi * (2.0 ** jnp.arange(num_freqs, dtype=x.dtype))
    return jnp.concatenate([jnp.sin(w * x), jnp.cos(w * x)])


def means(xs: Sequence[jax.Array]) -> jax.Array:
    """``[mean(x) for x in xs]`` (same-shaped ``xs``) as ``[len(xs)]``, in one pass (the
    promoted dtype of ``xs``; each sum accumulates in its input's dtype).

    A single variadic reduction reads every input once (XLA fuses the ``xs``' elementwise
    producers into it). Its JVP is the plain ``[mean(dx)]``: JAX's generic derivative of
    variadic reductions builds a reduction tree that is slow to compile and to run.
    """
    return _means(tuple(xs))


@jax.custom_jvp
def _means(xs):
    n = xs[0].size
    # [parts, n / parts] rows: XLA:CPU runs the rows of a reduction on different threads
    parts = next((k for k in (8, 4, 2) if n % k == 0 and n >= 4096 * k), 1)
    rows = tuple(x.reshape(parts, -1) for x in xs)
    zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
    sums = jax.lax.reduce(rows, zeros, lambda a, b: tuple(u + w for u, w in zip(a, b)), (1,))
    return jnp.stack([jnp.sum(s) for s in sums]) / n


@_means.defjvp
def _means_jvp(primals, tangents):
    (xs,), (dxs,) = primals, tangents
    return _means(xs), jnp.stack([jnp.mean(dx) for dx in dxs])


def moments_and_stats(g_leaves, p_leaves, m_leaves, v_leaves, mom_decays, rms_decays,
                      stride: int):
    """Per tensor: the updated accumulators and the second moments of its features.

    Returns ``(leaves, stats, new_m, new_v)``: ``leaves[t] = (g, p, ms, vs)`` (``ms``, ``vs``
    the updated accumulators unstacked per decay), ``stats`` ``[T, F]`` (the tensors'
    :func:`second_moment_terms` means, from :func:`stats_sample` with ``stride``) and the new
    stacked accumulators per tensor.
    """
    leaves, stats, new_m, new_v = [], [], [], []
    for g, p, m, v in zip(g_leaves, p_leaves, m_leaves, v_leaves, strict=True):
        m, v = update_moments(g, m, v, mom_decays, rms_decays)
        ms, vs = flat.unstack(m), flat.unstack(v)
        stats.append(means(second_moment_terms(
            stats_sample(g, stride), stats_sample(p, stride),
            [stats_sample(x, stride) for x in ms], [stats_sample(x, stride) for x in vs])))
        leaves.append((g, p, ms, vs))
        new_m.append(m)
        new_v.append(v)
    return leaves, jnp.stack(stats), new_m, new_v
