"""Low-rank antithetic perturbations for ES, truncated ES, PES and NRES (``rank=r``).

Each particle ``i`` perturbs every 2-D leaf ``W`` (``[m, n]``) of theta by

    E_i = sigma A_i B_i^T / sqrt(r),      A_i ~ N(0, I) [m, r],  B_i ~ N(0, I) [n, r]

(EGGROLL, Sarkar et al. 2025) and every other leaf (biases, vectors, scalars, >2-D kernels) by
full-rank ``N(0, sigma^2 I)`` noise. Each entry of ``E_i`` has mean 0 and variance ``sigma^2``
and distinct entries are uncorrelated, so ``Cov(vec E) = sigma^2 I`` exactly as for full-rank
noise; ``E`` is not Gaussian (a rank-``r`` matrix; its entries have excess kurtosis ``6/r``).

The estimators keep their formulas with ``eps`` the materialized ``E_i`` (``[B, m, n]``, built
once per truncation: theta is a few thousand numbers, this is negligible next to an unroll).
Their expectation is ``E[eps (F(theta + eps) - F(theta - eps))] / (2 sigma^2)``:

* for ``F`` quadratic in the perturbations, ``F(+) - F(-) = 2 eps . grad F`` and, by the
  covariance above, the expectation is exactly the gradient -- for ES, PES (whose ``xi`` sums
  independent low-rank terms) and NRES alike;
* in general it is ``grad F + O(sigma^2)`` (as full-rank ES), but not exactly the gradient of
  ``E F(theta + eps)``: Stein's identity holds only conditionally on ``B`` (the
  expectation is ``E[grad F(theta + eps) B B^T]``-like for ``r = 1``), and it approaches the
  Gaussian-smoothed gradient as ``r`` grows (EGGROLL's ``O(1/r)``).

For the unroll the perturbed thetas keep the factors: a 2-D leaf becomes
:class:`metaopt.lowrank.LowRank` ``(W, [a; -a], [B; B])`` with ``a = sigma A / sqrt(r)`` (the
negative half flips ``a``), ``W`` shared by all ``2B`` particles (``in_axes`` ``None``). A
learned optimizer that accepts low-rank theta (:func:`metaopt.lowrank.accepts_lowrank`)
computes ``x W + (x a) B^T`` with one shared matmul; any other consumer gets dense leaves
(``w + a b^T`` per particle, built inside the vmap). No built-in learned optimizer opts in
(measured in issue 16: the per-particle form of their networks is the faster one on XLA:CPU;
see :mod:`metaopt.lowrank`), so on them low rank changes the noise, not the speed.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt import lowrank
from metaopt.estimators import base

PyTree = Any


class LowRankNoise(NamedTuple):
    """Per-particle perturbations ``[B, ...]``: ``dense`` like theta (materialized ``E_i``),
    ``factors`` one entry per theta leaf (flattened order): ``(a [B, m, r], b [B, n, r])`` for
    a factored 2-D leaf, ``()`` otherwise."""

    dense: PyTree
    factors: tuple


def check_rank(rank: object) -> int | None:
    if rank is None:
        return None
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank: must be a positive integer or None (full rank), got {rank!r}")
    return rank


def draw(key: jax.Array, theta: PyTree, n: int, sigma: float, rank: int) -> LowRankNoise:
    """``n`` particles' perturbations of ``theta`` (module docstring)."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    dense, factors = [], []
    for k, x in zip(keys, leaves, strict=True):
        dtype = jnp.result_type(x)
        if jnp.ndim(x) == 2:
            m, c = jnp.shape(x)
            z = jax.random.normal(k, (n, m + c, rank), dtype)
            a, b = z[:, :m] * (sigma / math.sqrt(rank)), z[:, m:]
            dense.append(jnp.einsum("imr,inr->imn", a, b))
            factors.append((a, b))
        else:
            dense.append(sigma * jax.random.normal(k, (n, *jnp.shape(x)), dtype))
            factors.append(())
    return LowRankNoise(jax.tree.unflatten(treedef, dense), tuple(factors))


def perturbations(key, theta, num_pairs: int, sigma: float, rank: int,
                  axis_name: str | None) -> LowRankNoise:
    """:func:`draw` for ``num_pairs`` pairs, per device block (``base.per_task``)."""
    return base.per_task(lambda k, n: draw(k, theta, n, sigma, rank), key, num_pairs, axis_name)


def perturbed(theta: PyTree, noise: LowRankNoise) -> tuple[PyTree, PyTree]:
    """``([theta + E; theta - E], in_axes)``: ``2B`` particles, factored 2-D leaves as
    :class:`~metaopt.lowrank.LowRank` around the shared weight (module docstring)."""
    leaves, treedef = jax.tree.flatten(theta)
    eps = treedef.flatten_up_to(noise.dense)
    out = []
    for x, e, f in zip(leaves, eps, noise.factors, strict=True):
        if f:
            a, b = f
            out.append(lowrank.LowRank(x, jnp.concatenate([a, -a]), jnp.concatenate([b, b])))
        else:
            x = jnp.broadcast_to(x, e.shape)
            out.append(jnp.concatenate([x + e, x - e]))
    thetas = jax.tree.unflatten(treedef, out)
    return thetas, lowrank.in_axes(thetas)
