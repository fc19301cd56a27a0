"""A flat view of a parameter pytree, for per-parameter learned optimizers.

The per-parameter networks of :mod:`.mlp`, :mod:`.lstm` and :mod:`.hierarchical` run on one
concatenated vector of all ``N`` parameters instead of once per tensor: the compiled
update then has a fixed number of kernels whatever the number of tensors ``T`` (compile time
and per-kernel overhead no longer grow with the model's depth), and the optimizer state is a
few ``[K, N]`` arrays. Tensor ``t`` occupies ``[offsets[t], offsets[t] + sizes[t])`` in
flattening order (``jax.tree.flatten``).

Per-tensor quantities (normalization statistics, per-tensor LSTM outputs) are ``[T, ...]``
tables; :func:`per_tensor_means` computes them with one fused reduction per tensor over
static slices, and :func:`rows` broadcasts a table back to parameters by gathering with the
segment ids ``seg[i] = t`` (:func:`segment_ids`, computed in-graph: no ``N``-sized constant).

The flat vector's dtype is :attr:`Layout.dtype`: the promotion of the leaves' dtypes and
float32 (float32 for float32 or bfloat16 parameters, float64 when any leaf is float64);
:func:`unflatten` casts each slice back to its leaf's dtype.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

PyTree = Any


class Layout(NamedTuple):
    """Static description of a parameter pytree (Python values, never traced)."""

    treedef: Any
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[Any, ...]
    sizes: tuple[int, ...]
    offsets: tuple[int, ...]  # T + 1 entries, offsets[-1] = N

    @property
    def total(self) -> int:
        return self.offsets[-1]

    @property
    def num_tensors(self) -> int:
        return len(self.sizes)

    @property
    def dtype(self) -> Any:
        """dtype of the flat vector: the leaves' dtypes promoted with float32."""
        return jnp.result_type(jnp.float32, *self.dtypes)


def layout(tree: PyTree) -> Layout:
    """The :class:`Layout` of ``tree`` (arrays or shape/dtype structs); ValueError if empty."""
    leaves, treedef = jax.tree.flatten(tree)
    if not leaves:
        raise ValueError("params: a learned optimizer needs at least one parameter array")
    shapes = tuple(tuple(np.shape(x)) for x in leaves)
    sizes = tuple(int(np.prod(s, dtype=np.int64)) for s in shapes)
    offsets = tuple(int(o) for o in np.cumsum((0, *sizes)))
    return Layout(treedef, shapes, tuple(jnp.asarray(x).dtype for x in leaves), sizes, offsets)


def flatten(tree: PyTree, lay: Layout) -> jax.Array:
    """``tree`` (structured like ``lay``) as ``lay.dtype[N]``."""
    leaves = lay.treedef.flatten_up_to(tree)
    return jnp.concatenate([jnp.asarray(x, lay.dtype).reshape(-1) for x in leaves])


def unflatten(vec: jax.Array, lay: Layout) -> PyTree:
    """``[N]`` back to the pytree, each leaf cast to its original dtype."""
    leaves = [vec[o:o + n].reshape(s).astype(d)
              for o, n, s, d in zip(lay.offsets, lay.sizes, lay.shapes, lay.dtypes)]
    return lay.treedef.unflatten(leaves)


def segment_ids(lay: Layout) -> jax.Array | None:
    """int32[N] tensor index of every parameter (``None`` when there is one tensor).

    ``sum_t [i >= offsets[t]]`` for up to 16 tensors (fuses into the consumer loop), else a
    binary search over the offsets.
    """
    if lay.num_tensors == 1:
        return None
    idx = jax.lax.iota(jnp.int32, lay.total)
    starts = lay.offsets[1:-1]
    if len(starts) <= 15:
        seg = (idx >= starts[0]).astype(jnp.int32)
        for s in starts[1:]:
            seg = seg + (idx >= s).astype(jnp.int32)
        return seg
    return jnp.searchsorted(jnp.asarray(starts, jnp.int32), idx, side="right").astype(jnp.int32)


def unstack(x: jax.Array, axis: int = 0) -> list[jax.Array]:
    """``x`` split along ``axis`` into its slices (that axis dropped).

    One ``split`` whose transpose is one ``concatenate``; indexing ``x[i]`` instead would give
    one ``pad`` per slice (and per use) in reverse mode.
    """
    shape = x.shape[:axis] + x.shape[axis + 1:]
    return [p.reshape(shape) for p in jnp.split(x, x.shape[axis], axis=axis)]


def rows(table: jax.Array, seg: jax.Array | None) -> jax.Array:
    """``table[seg]``: a per-tensor ``[T, ...]`` table broadcast to ``[N, ...]`` (or ``[1, ...]``
    when ``seg`` is ``None``, i.e. one tensor)."""
    return table if seg is None else jnp.take(table, seg, axis=0)


def per_tensor_means(terms: Sequence[jax.Array], lay: Layout) -> jax.Array:
    """``[T, K]``: the mean over each tensor of each of the ``K`` ``[N]`` ``terms`` (each
    summed in its own dtype).

    One variadic reduction per tensor reads every term's slice once (XLA fuses the terms'
    elementwise producers into it, so they are never materialized). The derivative is the
    same linear map written as a segment sum (whose transpose, used by reverse mode, is one
    gather): the generic derivative of variadic reductions over ``T * K`` slices would
    compile to ``O(T K)`` kernels.
    """
    return _per_tensor_means(tuple(terms), lay)


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _per_tensor_means(terms: tuple[jax.Array, ...], lay: Layout) -> jax.Array:
    zeros = tuple(jnp.zeros((), x.dtype) for x in terms)
    out = []
    for o, n in zip(lay.offsets, lay.sizes):
        sums = jax.lax.reduce(tuple(x[o:o + n] for x in terms), zeros,
                              lambda a, b: tuple(u + w for u, w in zip(a, b)), (0,))
        out.append(jnp.stack(sums) / n)
    return jnp.stack(out)


@_per_tensor_means.defjvp
def _per_tensor_means_jvp(lay, primals, tangents):
    (terms,), (dterms,) = primals, tangents
    stacked = jnp.stack(dterms, axis=1)  # [N, K]
    inv_sizes = 1.0 / jnp.asarray(lay.sizes, stacked.dtype)[:, None]
    seg = segment_ids(lay)
    if seg is None:
        sums = jnp.sum(stacked, axis=0, keepdims=True)
    else:
        sums = jax.ops.segment_sum(stacked, seg, num_segments=lay.num_tensors,
                                   indices_are_sorted=True)
    return _per_tensor_means(terms, lay), sums * inv_sizes
