"""Per-parameter MLP learned optimizer (Metz et al. 2019, 2020; learned_optimization's MLPLOpt).

For every tensor of the model, with ``F`` tensor-normalized per-parameter features
(:mod:`.features`: gradient, parameter, momenta at ``mom_decays``, second-moment RMS at
``rms_decays``, ``m/sqrt(v)``, ``rsqrt(v)``) and the step embedding ``e(k/T)`` of
:func:`~metaopt.lopt.features.step_embedding` as per-tensor constants, a shared MLP
(:mod:`.ppnet`) outputs ``(d, a)`` per parameter and the update is

    u = -d * exp(a * exp_mult) * step_mult           (exp_mult = step_mult = 1e-3)

i.e. "direction times exp(magnitude)". With ``skip="adam"`` (default) the direction has a
learnable linear skip from the features initialised to the normalized ``m_1 / sqrt(v_1)``
feature, and the output layer starts small (x0.1), so an untrained optimizer is already a
descent method close to Adam with learning rate ``step_mult`` (akin to the "nominal" term of
learned_optimization's AdafacMLPLOpt); ``skip="none"`` is the plain MLP.

Variants: :func:`mlp_small` (one hidden layer of width 4, Adam-sized state -- fused
elementwise evaluation, low overhead) and :func:`mlp_lopt` defaults (2 x 32 on momenta at
0.9, 0.99, 0.999, the architecture of the papers).

Extra args: ``params`` is required (the parameter feature); the step embedding uses
``iteration`` (else the internal count) and ``num_steps`` (else the static ``num_steps``).
State: ``count`` and two pytrees like the params with leaves ``[D, *shape]`` (momenta) and
``[R, *shape]`` (second moments), each in its parameter's dtype, at least float32
(:func:`~metaopt.lopt.base.state_dtype`). Features and statistics are computed in that
dtype, the step embedding and the network in its promotion with theta's dtype
(:func:`~metaopt.lopt.base.compute_dtype`); updates are returned in the parameters' dtypes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.lopt import features as ft
from metaopt.lopt import flat, ppnet
from metaopt.lopt.base import (
    DEFAULT_NUM_STEPS,
    LearnedOptimizer,
    check_decays,
    check_num_steps,
    check_positive,
    check_widths,
    compute_dtype,
    jit_init,
    require,
    step_and_budget,
)

PyTree = Any
SKIPS = ("adam", "none")


class MLPState(NamedTuple):
    count: jax.Array  # int32[], updates applied so far
    mom: Any  # pytree like params, leaves [D, *p.shape] (state_dtype(p.dtype)): momenta
    rms: Any  # pytree like params, leaves [R, *p.shape]: second moments


def mlp_lopt(hidden: Sequence[int] = (32, 32),
             mom_decays: Sequence[float] = (0.9, 0.99, 0.999),
             rms_decays: Sequence[float] = (0.999,),
             num_freqs: int = 3, exp_mult: float = 1e-3, step_mult: float = 1e-3,
             skip: str = "adam", stats_stride: int = 1) -> LearnedOptimizer:
    """A per-parameter MLP learned optimizer (module docstring).

    theta: the per-parameter network of :func:`.ppnet.init_net` (``F`` features, ``2 L``
    step-embedding constants, outputs ``(d, a)``).
    """
    return _mlp(hidden, mom_decays, rms_decays, num_freqs, exp_mult, step_mult, skip,
                stats_stride, "mlp")


def _mlp(hidden, mom_decays, rms_decays, num_freqs, exp_mult, step_mult, skip, stats_stride,
         name) -> LearnedOptimizer:
    hidden = check_widths("hidden", hidden)
    mom_decays = check_decays("mom_decays", mom_decays)
    rms_decays = check_decays("rms_decays", rms_decays)
    ft.check_rms_decays(mom_decays, rms_decays)
    if skip not in SKIPS:
        raise ValueError(f"skip: unknown value {skip!r}; allowed values are {list(SKIPS)}")
    if isinstance(num_freqs, bool) or not isinstance(num_freqs, int) or num_freqs < 1:
        raise ValueError(f"num_freqs: must be a positive int, got {num_freqs!r}")
    if isinstance(stats_stride, bool) or not isinstance(stats_stride, int) or stats_stride < 1:
        raise ValueError(f"stats_stride: must be a positive int, got {stats_stride!r}")
    exp_mult = check_positive("exp_mult", exp_mult)
    step_mult = check_positive("step_mult", step_mult)
    nd, nr = len(mom_decays), len(rms_decays)
    num_in = ft.num_features(nd, nr)
    adam_index = 2 + nd + nr  # m_1 / sqrt(v_1) in features.per_param_features

    with_skip = skip == "adam"
    init = jit_init(ppnet.init_net, num_in=num_in, num_const=2 * num_freqs, hidden=hidden,
                    num_out=2, skip_index=adam_index if with_skip else None,
                    out_scale=0.1 if with_skip else 1.0)

    # Low-rank-perturbed theta (ES particles) reaches this optimizer materialized, per
    # particle (metaopt.inner.problem): on XLA:CPU the per-particle network compiles to one
    # fused kernel, faster than a shared hidden matmul plus a rank-r correction
    # (scripts/results/issue16.md).
    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def init_state(params):
            return MLPState(jnp.zeros((), jnp.int32), ft.init_accumulators(params, nd),
                            ft.init_accumulators(params, nr))

        def update(updates, state, params=None, **extra):
            params = require(name, "params", params)
            dt = compute_dtype(theta, state.mom, state.rms)
            k, t = step_and_budget(extra, state.count, num_steps, dt)
            const = ft.step_embedding(k, t, num_freqs)
            g_leaves, treedef = jax.tree.flatten(updates)
            p_leaves = treedef.flatten_up_to(params)
            m_leaves, v_leaves = treedef.flatten_up_to(state.mom), treedef.flatten_up_to(state.rms)
            leaves, stats, new_m, new_v = ft.moments_and_stats(
                g_leaves, p_leaves, m_leaves, v_leaves, mom_decays, rms_decays, stats_stride)
            scales = ft.normalizer_scales(stats)  # [T, F]
            nt = len(leaves)
            w_in, b_in = ppnet.fold_inputs(theta, scales, jnp.broadcast_to(const, (nt, len(const))))
            outs = []
            for (g, p, ms, vs), s_t, w_t, b_t in zip(leaves, flat.unstack(scales),
                                                     flat.unstack(w_in), flat.unstack(b_in)):
                d, a = ppnet.apply_net(theta, ft.per_param_features(g, p, ms, vs), s_t, w_t, b_t)
                outs.append((-d * jnp.exp(a * exp_mult) * step_mult).astype(g.dtype))
            new_state = MLPState(optax.safe_increment(state.count), treedef.unflatten(new_m),
                                 treedef.unflatten(new_v))
            return treedef.unflatten(outs), new_state

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, name)


def mlp_small(hidden: Sequence[int] = (4,), mom_decays: Sequence[float] = (0.9,),
              rms_decays: Sequence[float] = (0.999,), num_freqs: int = 3,
              exp_mult: float = 1e-3, step_mult: float = 1e-3, skip: str = "adam",
              stats_stride: int = 9) -> LearnedOptimizer:
    """The low-overhead variant: one hidden layer of width 4 on ``F = 6`` features from the
    same state as Adam (one momentum at 0.9, one second moment at 0.999), with the
    normalization statistics of large tensors estimated from 1/9 of their entries
    (:func:`~metaopt.lopt.features.stats_sample`): per step it reads and writes about 10
    parameter-sized arrays (Adam: about 7) plus ~60 flops per parameter. A second momentum
    (``mom_decays=(0.9, 0.99)``) costs ~20% more. Options as :func:`mlp_lopt`."""
    return _mlp(hidden, mom_decays, rms_decays, num_freqs, exp_mult, step_mult, skip,
                stats_stride, "mlp_small")
