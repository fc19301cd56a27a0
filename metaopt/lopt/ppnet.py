"""The per-parameter network shared by the MLP and hierarchical learned optimizers.

A small MLP applied independently to every scalar parameter of a tensor (Metz et al. 2019,
2020). Its inputs are ``F`` per-parameter features ``x_f`` (arrays shaped like the tensor, see
:mod:`.features`), each normalized over the tensor by a scale ``s_f``, and ``C`` per-tensor
constants ``c`` (step embedding, per-tensor LSTM outputs...). The first layer is

    h_j = relu(sum_f x_f W'[f, j] + b'_j),     W' = s[:, None] W[:F],  b' = b + c W[F:],

i.e. normalization and constants are folded into per-tensor weights; later layers are
dense + relu and the last is linear with ``num_out`` outputs. An optional learnable *skip*
adds ``sum_f s_f x_f k_f`` to output 0 (:func:`init_net`).

Two evaluations of the same function: with every hidden width at most
:data:`FUSED_MAX_WIDTH`, the network is written as scalar-weighted sums of tensor-shaped
arrays, which XLA compiles into one elementwise loop (no ``[n, F]`` matrix is built, no
matmul with a tiny inner dimension); otherwise features are stacked to ``[n, F]`` and
multiplied by the weight matrices, the narrow output layer as a broadcast product summed
over the width (:func:`narrow_matmul`), so that XLA:CPU compiles the whole network into one
kernel (measured 1.4x on PES meta-training, ``scripts/results/issue16.md``; the skip stays a
``dot``: as a broadcast sum it was pulled into a slower fusion). The fused form's derivatives
(``custom_jvp``) are taken through the matmul form, so meta-gradients need a few dots instead
of ``F * H`` scalar reductions. :func:`apply_net_flat` is the matmul form on the flat layout
of :mod:`.flat` (all tensors at once; used by :mod:`.hierarchical`; its output layer stays a
``dot``: as :func:`narrow_matmul` it made that optimizer ~2x slower).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaopt.lopt import layers as layers_lib
from metaopt.lopt.flat import Layout, rows, segment_ids, unstack

FUSED_MAX_WIDTH = 8


def init_net(key: jax.Array, num_in: int, num_const: int, hidden: Sequence[int],
             num_out: int, skip_index: int | None, out_scale: float = 1.0) -> dict:
    """Parameters ``{"layers": [{"w", "b"}, ...], ["skip": float32[F]]}``.

    Weights are LeCun-normal (``N(0, 1/fan_in)``), biases zero; the output layer is further
    scaled by ``out_scale``. With ``skip_index`` the skip weights ``k`` are one-hot at that
    feature, so that at initialisation output 0 is that normalized feature plus the MLP.
    """
    widths = [num_in + num_const, *hidden, num_out]
    zs = layers_lib.normals(key, list(zip(widths[:-1], widths[1:])))
    scales = [1.0] * (len(zs) - 1) + [out_scale]
    layers = [layers_lib.dense_init([z], sc) for z, sc in zip(zs, scales, strict=True)]
    net = {"layers": layers}
    if skip_index is not None:
        net["skip"] = jax.nn.one_hot(skip_index, num_in, dtype=jnp.float32)
    return net


def fold_inputs(net: dict, scales: jax.Array, const: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Per-tensor first-layer weights for all ``T`` tensors at once.

    ``scales``: ``[T, F]``, ``const``: ``[T, C]`` -> ``W'``: ``[T, F, H]``, ``b'``: ``[T, H]``
    (a couple of small kernels for the whole model instead of several per tensor).
    """
    w0 = net["layers"][0]["w"]
    f = scales.shape[1]
    return scales[:, :, None] * w0[None, :f, :], net["layers"][0]["b"][None, :] + const @ w0[f:]


def apply_net(net: dict, feats: Sequence[jax.Array], scales: jax.Array, w_in: jax.Array,
              b_in: jax.Array) -> list[jax.Array]:
    """``num_out`` outputs shaped like ``feats[0]``, for one tensor.

    Args:
      feats: ``F`` raw features of the tensor (same shape).
      scales: ``[F]`` its normalization scales (used by the skip).
      w_in, b_in: ``[F, H]``, ``[H]``, its row of :func:`fold_inputs`.
    """
    widths = [layer["w"].shape[1] for layer in net["layers"][:-1]]
    fn = _apply_fused if max(widths) <= FUSED_MAX_WIDTH else _apply_dot
    return fn(net, list(feats), scales, w_in, b_in)


def _dense_fused(xs: Sequence[jax.Array], w: Sequence[Sequence[jax.Array]],
                 bias: Sequence[jax.Array]) -> list[jax.Array]:
    """``y_j = bias_j + sum_i xs_i w[i][j]`` with array ``xs`` and scalar weights."""
    return [bias[j] + sum(xs[i] * w[i][j] for i in range(len(xs))) for j in range(len(bias))]


def _scalars(w: jax.Array) -> list[list[jax.Array]]:
    """A ``[I, J]`` matrix as nested lists of scalars (``split`` ops, not ``I * J`` slices)."""
    return [unstack(row) for row in unstack(w)]


@jax.custom_jvp
def _apply_fused(net, feats, scales, w_in, b_in) -> list[jax.Array]:
    layers = net["layers"]
    h = [jax.nn.relu(y) for y in _dense_fused(feats, _scalars(w_in), unstack(b_in))]
    for layer in layers[1:-1]:
        h = [jax.nn.relu(y) for y in _dense_fused(h, _scalars(layer["w"]), unstack(layer["b"]))]
    out = _dense_fused(h, _scalars(layers[-1]["w"]), unstack(layers[-1]["b"]))
    if "skip" in net:
        k = unstack(scales * net["skip"])
        out[0] = out[0] + sum(x * k[f] for f, x in enumerate(feats))
    return out


@_apply_fused.defjvp
def _apply_fused_jvp(primals, tangents):
    _, tangent = jax.jvp(_apply_dot, primals, tangents)
    return _apply_fused(*primals), tangent


def _apply_dot(net, feats, scales, w_in, b_in) -> list[jax.Array]:
    """On the stacked ``[n, F]`` features of the tensor."""
    layers = net["layers"]
    shape = feats[0].shape
    x = jnp.stack([f.reshape(-1) for f in feats], axis=1)  # [n, F]
    h = jax.nn.relu(x @ w_in + b_in[None, :])
    for layer in layers[1:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"][None, :])
    y = narrow_matmul(h, layers[-1]["w"]) + layers[-1]["b"][None, :]  # [n, num_out]
    outs = [o.reshape(shape) for o in unstack(y, axis=1)]
    if "skip" in net:
        outs[0] = outs[0] + (x @ (scales * net["skip"])).reshape(shape)
    return outs


@jax.custom_jvp
def narrow_matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` for a ``w`` with few columns (``[n, K] x [K, J]``, ``J`` <= a few), written
    as a broadcast product summed over ``K``: XLA:CPU then fuses it with the ReLU and the
    hidden matmuls before it into one kernel (a ``dot`` with 1-2 output columns breaks that
    fusion and runs at a few GFLOP/s; ~2x on the 2 x 32 network's forward pass).

    Its derivative is ``dx @ w + [x @ dw[:, j] for j]``: the ``w`` term as ``J``
    matrix-vector products, whose transposes (reverse mode: ``dw[:, j] = x^T ct_j``, summed
    over all leading axes) XLA:CPU runs several times faster than the ``[K, n] x [n, J]``
    ``dot`` (measured on TBPTT, ``scripts/results/issue16.md``)."""
    return jnp.sum(x[..., :, None] * w.reshape((1,) * (x.ndim - 1) + w.shape), axis=-2)


@narrow_matmul.defjvp
def _narrow_matmul_jvp(primals, tangents):
    (x, w), (dx, dw) = primals, tangents
    by_column = jnp.stack([x @ dw[:, j] for j in range(dw.shape[1])], axis=-1)
    return narrow_matmul(x, w), dx @ w + by_column


def apply_net_flat(net: dict, feats: Sequence[jax.Array], scales: jax.Array, const: jax.Array,
                   lay: Layout) -> list[jax.Array]:
    """The same network on the flat layout of :mod:`.flat` (matmul form only).

    ``feats``: ``F`` ``[N]`` features of all tensors; ``scales`` ``[T, F]`` and ``const``
    ``[T, C]`` per tensor, gathered to parameters by segment id. Returns ``num_out`` ``[N]``.
    The number of kernels does not grow with the number of tensors ``T``; use it where the
    matmuls dominate anyway (wide networks) and compile time matters.
    """
    layers = net["layers"]
    seg = segment_ids(lay)
    w0 = layers[0]["w"]
    b_in = layers[0]["b"][None, :] + const @ w0[len(feats):]  # [T, H]
    x = jnp.stack(list(feats), axis=1) * rows(scales, seg)  # [N, F]
    h = jax.nn.relu(x @ w0[:len(feats)] + rows(b_in, seg))
    for layer in layers[1:-1]:
        h = jax.nn.relu(h @ layer["w"] + layer["b"][None, :])
    outs = unstack(h @ layers[-1]["w"] + layers[-1]["b"][None, :], axis=1)
    if "skip" in net:
        outs[0] = outs[0] + x @ net["skip"]
    return outs
