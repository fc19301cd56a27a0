"""Low-rank-perturbed weight matrices: ``W + a b^T`` kept as factors (EGGROLL's trick).

Evolution strategies with low-rank perturbations (Sarkar et al. 2025, "Evolution Strategies at
the Hyperscale", arXiv 2511.16652) perturb a weight matrix ``W`` (``[m, n]``) of particle ``i``
by ``E_i = sigma A_i B_i^T / sqrt(r)`` with ``A_i`` ``[m, r]``, ``B_i`` ``[n, r]`` standard
normal. A layer ``x @ (W + E_i)`` then costs one matmul with the weight *shared* by every
particle plus a rank-``r`` correction,

    x @ (W + a b^T) = x @ W + (x @ a) @ b^T,          a = sigma A / sqrt(r),  b = B,

instead of one batched matmul per particle. :class:`LowRank` holds ``(w, a, b)``; under a
``vmap`` over particles ``w`` is unbatched (``in_axes`` ``None``, :func:`in_axes`) and
``a``, ``b`` are per particle, so ``matmul(x, LowRank)`` lowers to one large GEMM of all
particles' rows.

Code that consumes theta opts in with :func:`accepts_lowrank`; everything else receives
:func:`materialize`'d dense leaves (``w + a b^T`` per particle). No built-in learned optimizer
opts in: the per-parameter networks already multiply ``[n, H]`` rows per particle (a GEMM, not
a GEMV, so sharing the weight saves no arithmetic), and on XLA:CPU their per-particle form
compiles to one fused kernel that beat the shared-weight form, even with no correction at all
(``scripts/results/issue16.md``). The speed-up of the paper needs consumers whose per-particle
work is a matrix-vector product (a policy or a sequence model run on one input per
particle). A tree with no :class:`LowRank` node is returned unchanged (same leaves), so
full-rank code paths are untouched.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

PyTree = Any
#: Ranks up to this apply the correction ``(x a) b^T`` as ``r`` broadcast products (fused
#: elementwise by XLA) instead of a matmul with inner dimension ``r``.
ELEMENTWISE_MAX_RANK = 4


@jax.tree_util.register_pytree_node_class
class LowRank:
    """The matrix ``w + a @ b^T``: ``w`` ``[m, n]``, ``a`` ``[m, r]``, ``b`` ``[n, r]``."""

    def __init__(self, w, a, b):
        self.w, self.a, self.b = w, a, b

    def tree_flatten(self):
        return (self.w, self.a, self.b), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        del aux
        return cls(*children)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.w))

    @property
    def dtype(self):
        return jnp.result_type(self.w)

    def value(self) -> jax.Array:
        """The dense matrix ``w + a b^T`` (``[..., m, n]``, batched like ``a``)."""
        prod = jnp.einsum("...mr,...nr->...mn", self.a, self.b)
        return jnp.broadcast_to(self.w, prod.shape) + prod

    def rows(self, index) -> LowRank:
        """Rows ``index`` (a slice) of the matrix, still factored."""
        return LowRank(self.w[index], self.a[..., index, :], self.b)

    def __repr__(self) -> str:
        return f"LowRank(w={jnp.shape(self.w)}, a={jnp.shape(self.a)}, b={jnp.shape(self.b)})"


def is_lowrank(x: object) -> bool:
    return isinstance(x, LowRank)


def has_lowrank(tree: PyTree) -> bool:
    """Whether ``tree`` contains a :class:`LowRank` node."""
    return any(is_lowrank(x) for x in jax.tree.leaves(tree, is_leaf=is_lowrank))


def materialize(tree: PyTree) -> PyTree:
    """``tree`` with every :class:`LowRank` node replaced by its dense value."""
    if not has_lowrank(tree):
        return tree
    return jax.tree.map(lambda x: x.value() if is_lowrank(x) else x, tree, is_leaf=is_lowrank)


def matmul(x: jax.Array, w) -> jax.Array:
    """``x @ w`` for a dense ``w`` or a :class:`LowRank` one (``x @ w.w + (x @ w.a) @ w.b^T``)."""
    if not is_lowrank(w):
        return x @ w
    u = x @ w.a  # [..., n, r]
    rank = w.a.shape[-1]
    if rank <= ELEMENTWISE_MAX_RANK and jnp.ndim(x) >= 2 and jnp.ndim(w.b) == 2:
        corr = sum(u[..., k, None] * w.b[None, :, k] for k in range(rank))
    else:
        corr = u @ jnp.swapaxes(w.b, -1, -2)
    return x @ w.w + corr


def in_axes(tree: PyTree) -> PyTree:
    """``vmap`` ``in_axes`` for a particle-batched tree: ``0`` for every leaf, except the
    shared ``w`` of each :class:`LowRank` node (``None``)."""
    return jax.tree.map(lambda x: LowRank(None, 0, 0) if is_lowrank(x) else 0, tree,
                        is_leaf=is_lowrank)


def accepts_lowrank(fn):
    """Mark ``fn`` (an optimizer factory ``theta -> transformation``) as able to take theta
    with :class:`LowRank` leaves; returns ``fn``."""
    fn.accepts_lowrank = True
    return fn


def takes_lowrank(fn) -> bool:
    return bool(getattr(fn, "accepts_lowrank", False))
