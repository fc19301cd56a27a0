"""Normalized per-parameter MLP learned optimizer with a learned step-size schedule.

In the style of Celo2 (a per-parameter MLP of hidden width 8 with input and output RMS
normalization, optional Newton-Schulz orthogonalization of the updates of 2-D weights) and of
Celo's learned scheduler (Moudgil et al. 2025), on this package's feature pipeline.

For every parameter tensor ``p`` (``n`` entries) at step ``k`` of a budget ``T``:

1. Input normalization: the ``F`` per-parameter features of :mod:`.features` (gradient,
   parameter, momenta at ``mom_decays``, second-moment roots, ``m_i / sqrt(v)``,
   ``1 / sqrt(v)``), each divided by its RMS over the tensor, and the step embedding
   ``e(k/T)`` as per-tensor constants go through a shared MLP (:mod:`.ppnet`, hidden widths
   ``hidden``) with one output ``d``; with ``skip="adam"`` it has a learnable linear skip
   initialised to the normalized ``m_1 / sqrt(v_1)`` feature, so the untrained optimizer is
   an (un-bias-corrected) Adam direction.
2. Optional orthogonalization (``orthogonalize=True``): tensors with two or more axes are
   viewed as ``[prod(shape[:-1]), shape[-1]]`` matrices and ``d`` is replaced by ``ns_steps``
   quintic Newton-Schulz iterations towards ``U V^T`` of its SVD (Muon's coefficients
   ``(3.4445, -4.7750, 2.0315)``, Jordan et al. 2024).
3. Output normalization: ``u = d / sqrt(mean_tensor(d^2) + eps)``, so every tensor's update
   has unit RMS before its step size.
4. Step size (the learned scheduler): ``lr_t = exp(log_lr) * base(k/T) * exp(B tanh(z_t / B))``
   with ``base`` a fixed decay shape (``decay``: ``cosine`` ``(1 + cos(pi x)) / 2``, ``linear``
   ``1 - x`` or ``none``), ``B = max_log_mult`` bounding the learned factor to
   ``[e^-B, e^B]``, and ``z_t`` from a small MLP (``sched_hidden``, output initialised at 0):
   ``scheduler="global"``: one ``z`` from ``e(k/T)``; ``"tensor"``: one ``z_t`` per tensor from
   ``e(k/T)`` and the tensor's dimensionless signal-to-noise statistics
   ``log mean(m_i^2 / v)`` (near 0 for consistent gradients, ``log((1 - b)/(1 + b))`` for
   pure noise); ``"none"``: ``z = 0``.

The update is ``-lr_t * u``. It is invariant to a rescaling of the loss (every feature and
statistic is, up to the eps constants), its per-tensor RMS is exactly ``lr_t``, and the
schedule follows the step budget (``num_steps`` extra arg or static), so a longer budget
stretches it instead of running past its end.

theta: ``{"net": ppnet network, "log_lr": float32[], "sched": [{"w", "b"}, ...]}``.
State, extra args and dtypes as :mod:`.mlp` (``params`` required; ``iteration`` and
``num_steps`` used by the schedule when given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as ft
from metaopt.lopt import flat, ppnet
from metaopt.lopt import layers as layers_lib
from metaopt.lopt.base import (
    DEFAULT_NUM_STEPS,
    LearnedOptimizer,
    check_decays,
    check_num_steps,
    check_positive,
    check_widths,
    compute_dtype,
    f32,
    jit_init,
    require,
    step_and_budget,
)

SCHEDULERS = ("global", "tensor", "none")
DECAYS = ("cosine", "linear", "none")
SKIPS = ("adam", "none")
NS_COEFFS = (3.4445, -4.7750, 2.0315)
OUT_EPS = 1e-12


class NormMLPState(NamedTuple):
    count: jax.Array  # int32[], updates applied so far
    mom: object  # pytree like params, leaves [D, *p.shape]: momenta
    rms: object  # pytree like params, leaves [R, *p.shape]: second moments


def newton_schulz(d: jax.Array, steps: int) -> jax.Array:
    """Approximately ``U V^T`` of ``d`` viewed as ``[prod(shape[:-1]), shape[-1]]``.

    ``X_0 = M / ||M||_F``; ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` on the wide
    orientation (singular values are driven into roughly [0.7, 1.2], not exactly to 1).
    """
    shape = d.shape
    x = d.reshape(-1, shape[-1])
    wide = x.shape[0] <= x.shape[1]
    x = x if wide else x.T
    x = x * jax.lax.rsqrt(jnp.sum(jnp.square(x)) + OUT_EPS)
    a, b, c = NS_COEFFS
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x if wide else x.T).reshape(shape)


def _orthogonalizable(shape: tuple[int, ...]) -> bool:
    return len(shape) >= 2 and math.prod(shape[:-1]) > 1 and shape[-1] > 1


def base_decay(x: jax.Array, decay: str) -> jax.Array:
    """The fixed schedule shape at ``x = k/T`` in [0, 1]."""
    if decay == "cosine":
        return 0.5 * (1.0 + jnp.cos(jnp.pi * x))
    if decay == "linear":
        return 1.0 - x
    return jnp.ones_like(x)


def _init(key, num_in, num_const, hidden, skip_index, sched_in, sched_hidden, learning_rate):
    k_net, k_sched = jax.random.split(key)
    net = ppnet.init_net(k_net, num_in=num_in, num_const=num_const, hidden=hidden, num_out=1,
                         skip_index=skip_index, out_scale=0.1 if skip_index is not None else 1.0)
    widths = [sched_in, *sched_hidden, 1]
    zs = layers_lib.normals(k_sched, list(zip(widths[:-1], widths[1:])))
    sched = [layers_lib.dense_init([z], 0.0 if i == len(zs) - 1 else 1.0)
             for i, z in enumerate(zs)]
    return {"net": net, "log_lr": f32(math.log(learning_rate)), "sched": sched}


def _mlp(layers: Sequence[dict], x: jax.Array) -> jax.Array:
    for layer in layers[:-1]:
        x = jax.nn.relu(layers_lib.dense(layer, x))
    return layers_lib.dense(layers[-1], x)[..., 0]


def norm_mlp(hidden: Sequence[int] = (8,), mom_decays: Sequence[float] = (0.9, 0.99),
             rms_decays: Sequence[float] = (0.999,), num_freqs: int = 3,
             learning_rate: float = 1e-3, scheduler: str = "tensor",
             sched_hidden: Sequence[int] = (8,), max_log_mult: float = 3.0,
             decay: str = "cosine", orthogonalize: bool = False, ns_steps: int = 5,
             skip: str = "adam", stats_stride: int = 9) -> LearnedOptimizer:
    """The normalized per-parameter MLP optimizer (module docstring)."""
    name = "norm_mlp"
    hidden = check_widths("hidden", hidden)
    sched_hidden = check_widths("sched_hidden", sched_hidden)
    mom_decays = check_decays("mom_decays", mom_decays)
    rms_decays = check_decays("rms_decays", rms_decays)
    ft.check_rms_decays(mom_decays, rms_decays)
    for field, value, allowed in (("scheduler", scheduler, SCHEDULERS),
                                  ("decay", decay, DECAYS), ("skip", skip, SKIPS)):
        if value not in allowed:
            raise ValueError(f"{field}: unknown value {value!r}; allowed values are "
                             f"{list(allowed)}")
    for field, value in (("num_freqs", num_freqs), ("ns_steps", ns_steps),
                         ("stats_stride", stats_stride)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{field}: must be a positive int, got {value!r}")
    if not isinstance(orthogonalize, bool):
        raise ValueError(f"orthogonalize: must be true or false, got {orthogonalize!r}")
    learning_rate = check_positive("learning_rate", learning_rate)
    max_log_mult = check_positive("max_log_mult", max_log_mult)
    nd, nr = len(mom_decays), len(rms_decays)
    num_in = ft.num_features(nd, nr)
    adam_index = 2 + nd + nr  # m_1 / sqrt(v_1) in features.per_param_features
    snr = list(range(adam_index, adam_index + nd))  # mean(m_i^2 / v) in the statistics
    sched_in = 2 * num_freqs + (nd if scheduler == "tensor" else 0)
    init = jit_init(_init, num_in=num_in, num_const=2 * num_freqs, hidden=hidden,
                    skip_index=adam_index if skip == "adam" else None, sched_in=sched_in,
                    sched_hidden=sched_hidden, learning_rate=learning_rate)

    def log_mults(theta, emb, stats):
        """``B tanh(z / B)`` per tensor, ``[T]``."""
        nt = stats.shape[0]
        if scheduler == "none":
            return jnp.zeros((nt,), emb.dtype)
        if scheduler == "global":
            z = jnp.broadcast_to(_mlp(theta["sched"], emb[None, :]), (nt,))
        else:
            x = jnp.concatenate([jnp.broadcast_to(emb, (nt, emb.shape[0])),
                                 jnp.log(stats[:, snr] + ft.NORM_EPS)], axis=1)
            z = _mlp(theta["sched"], x)
        return max_log_mult * jnp.tanh(z / max_log_mult)

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def init_state(params):
            return NormMLPState(jnp.zeros((), jnp.int32), ft.init_accumulators(params, nd),
                                ft.init_accumulators(params, nr))

        def update(updates, state, params=None, **extra):
            params = require(name, "params", params)
            dt = compute_dtype(theta, state.mom, state.rms)
            k, t = step_and_budget(extra, state.count, num_steps, dt)
            emb = ft.step_embedding(k, t, num_freqs)
            g_leaves, treedef = jax.tree.flatten(updates)
            p_leaves = treedef.flatten_up_to(params)
            m_leaves, v_leaves = treedef.flatten_up_to(state.mom), treedef.flatten_up_to(state.rms)
            leaves, stats, new_m, new_v = ft.moments_and_stats(
                g_leaves, p_leaves, m_leaves, v_leaves, mom_decays, rms_decays, stats_stride)
            scales = ft.normalizer_scales(stats)
            nt = len(leaves)
            w_in, b_in = ppnet.fold_inputs(theta["net"], scales,
                                           jnp.broadcast_to(emb, (nt, emb.shape[0])))
            x = jnp.clip(k / t, 0.0, 1.0)
            lrs = (jnp.exp(theta["log_lr"]) * base_decay(x, decay)
                   * jnp.exp(log_mults(theta, emb, stats)))  # [T]
            outs = []
            for (g, p, ms, vs), s_t, w_t, b_t, lr_t in zip(
                    leaves, flat.unstack(scales), flat.unstack(w_in), flat.unstack(b_in),
                    flat.unstack(lrs), strict=True):
                (d,) = ppnet.apply_net(theta["net"], ft.per_param_features(g, p, ms, vs), s_t,
                                       w_t, b_t)
                if orthogonalize and _orthogonalizable(d.shape):
                    d = newton_schulz(d, ns_steps)
                u = d * jax.lax.rsqrt(jnp.mean(jnp.square(d)) + OUT_EPS)
                outs.append((-lr_t * u).astype(g.dtype))
            new_state = NormMLPState(optax.safe_increment(state.count), treedef.unflatten(new_m),
                                     treedef.unflatten(new_v))
            return treedef.unflatten(outs), new_state

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, name)
