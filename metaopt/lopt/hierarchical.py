"""Hierarchical learned optimizer (Metz et al. 2020, "Tasks, stability, architecture, and
compute", arXiv 2009.11243; cf. learned_optimization's RNNMLPLOpt).

Two levels, run once per update:

1. A **per-tensor LSTM** (``lstm_hidden = 64`` units, shared over tensors, one state per tensor)
   reads, for each tensor ``t``, a vector of tensor-level statistics ``z_t``:
   ``L(mean m_i), sign(mean m_i), L(var m_i)`` for each momentum decay, ``L(mean v_i),
   L(var v_i)`` for each second-moment decay, ``L(mean p), sign(mean p), L(var p)``,
   ``L(||p||), L(||g||)``, is-scalar, ``log`` of the (up to 4) dims, the featurized training
   and validation losses (below), a has-validation flag, ``from_mlp_t`` (the previous step's
   mean over the tensor of the MLP's extra outputs) and ``from_lstm`` (a DeepSets-style mean over
   tensors of a projection of the previous LSTM outputs). ``L(x) = clip(log(|x| + 1e-8),
   -10, 10) / 5``; norms use eps inside the root. Outputs: ``h_t`` (``[T, 64]``), then
   ``ff_t = h_t W_ff`` (``lstm_to_ff`` values per tensor) and ``from_lstm' = mean_t(h_t W_in)``.
2. A **per-parameter MLP** (:mod:`.ppnet`, ``2 x 32``) on the normalized features of
   :mod:`.features` at decays ``{0.5, 0.9, 0.99, 0.999, 0.9999}`` (``m_i / sqrt(v_i)`` pairs the
   same decay), with per-tensor constants ``[e(k/T), log(#tensors) - 1, ff_t]``. It outputs
   ``(d, a, o_1..o_M)``: the update is ``u = -d exp(a * 1e-3) * 1e-3`` and
   ``from_mlp_t' = mean over the tensor of o``.

Loss features: exponential moving averages with bias correction, ``mu`` and ``s^2`` (decay
0.9 for the training loss, 0.95 for the validation loss);
``f_train = clip((L - mu_train) / sqrt(s_train^2 + 1e-8), -5, 5)`` (statistics including the
current loss) and ``f_valid = clip((mu_valid - mu_train) / sqrt(s_train^2 + 1e-8), -5, 5)``.

Extra args: ``loss`` (training loss) and ``params`` are **required**; ``valid_loss`` is
optional (without it ``f_valid = 0`` and the flag is -1); the step embedding uses
``iteration`` / ``num_steps`` when given, else the internal count and the static budget.
``skip="adam"`` adds the learnable skip of :mod:`.mlp` (initialised to the normalized
``m_{0.9} / sqrt(v_{0.9})``) so that the untrained optimizer descends.

Layout: the flat vector of :mod:`.flat` (state ``[D, N]`` accumulators, per-tensor statistics
by one fused reduction per tensor, the per-parameter MLP in matmul form with per-tensor values
gathered by segment id), so that the compiled update -- and its meta-gradient -- has a number
of kernels independent of the number of tensors; the ``2 x 32`` MLP's matmuls dominate the
cost of the concatenation this needs.

Dtypes: every state array has the flat vector's dtype ``S`` (:attr:`.flat.Layout.dtype`:
float32 for float32 parameters, float64 for float64 ones); accumulators, statistics, loss
normalizers and features are computed in ``S``, the LSTM, step embedding and MLP in the
promotion of ``S`` and theta's dtype; recurrent outputs are cast back to ``S`` when stored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.lopt import features as ft
from metaopt.lopt import flat, layers, ppnet
from metaopt.lopt.base import (
    DEFAULT_NUM_STEPS,
    LearnedOptimizer,
    check_decays,
    check_num_steps,
    check_widths,
    compute_dtype,
    jit_init,
    require,
    step_and_budget,
)

SKIPS = ("adam", "none")
TRAIN_DECAY, VALID_DECAY = 0.9, 0.95


class LossNormState(NamedTuple):
    mean: jax.Array  # S[], EMA of the loss (biased)
    var: jax.Array  # S[], EMA of its squared deviation (biased)
    count: jax.Array  # int32[], number of EMA updates


class HierarchicalState(NamedTuple):
    count: jax.Array  # int32[], updates applied so far
    mom: jax.Array  # S[D, N], over the flat parameters (metaopt.lopt.flat); S = lay.dtype
    rms: jax.Array  # S[D, N]
    lstm_h: jax.Array  # S[T, lstm_hidden]
    lstm_c: jax.Array  # S[T, lstm_hidden]
    from_mlp: jax.Array  # S[T, from_mlp]
    from_lstm: jax.Array  # S[from_lstm]
    train_norm: LossNormState
    valid_norm: LossNormState


def _norm_init(dtype) -> LossNormState:
    return LossNormState(jnp.zeros((), dtype), jnp.zeros((), dtype), jnp.zeros((), jnp.int32))


def _norm_update(s: LossNormState, x: jax.Array, decay: float) -> LossNormState:
    x = jnp.asarray(x).astype(s.mean.dtype)
    mean = decay * s.mean + (1 - decay) * x
    var = decay * s.var + (1 - decay) * jnp.square(mean - x)
    return LossNormState(mean, var, optax.safe_increment(s.count))


def _corrected(s: LossNormState, decay: float) -> tuple[jax.Array, jax.Array]:
    c = 1.0 / (1.0 - decay ** s.count.astype(s.mean.dtype) + 1e-8)
    return s.mean * c, s.var * c


def _log_feat(x: jax.Array) -> jax.Array:
    return jnp.clip(jnp.log(jnp.abs(x) + 1e-8), -10.0, 10.0) / 5.0


def _shape_feats(shape: tuple[int, ...]) -> np.ndarray:
    """float64[5]: is-scalar and ``log(dim) - 1`` of up to 4 dims (cast where used)."""
    dims = list(shape)
    if len(dims) > 4:
        dims = [int(np.prod(dims[:-3]))] + dims[-3:]
    dims = dims + [1] * (4 - len(dims))
    return np.asarray([1.0 if len(shape) == 0 else -1.0] + [math.log(d) - 1.0 for d in dims],
                      np.float64)


def hierarchical_lopt(hidden: Sequence[int] = (32, 32),
                      decays: Sequence[float] = (0.5, 0.9, 0.99, 0.999, 0.9999),
                      lstm_hidden: int = 64, lstm_to_ff: int = 17, from_mlp: int = 16,
                      from_lstm: int = 18, num_freqs: int = 3, exp_mult: float = 1e-3,
                      step_mult: float = 1e-3, skip: str = "adam") -> LearnedOptimizer:
    """The hierarchical optimizer (module docstring); sizes default to Metz et al. 2020."""
    hidden = check_widths("hidden", hidden)
    decays = check_decays("decays", decays)
    for field, value in (("lstm_hidden", lstm_hidden), ("lstm_to_ff", lstm_to_ff),
                         ("from_mlp", from_mlp), ("from_lstm", from_lstm),
                         ("num_freqs", num_freqs)):
        check_widths(field, (value,))
    if skip not in SKIPS:
        raise ValueError(f"skip: unknown value {skip!r}; allowed values are {list(SKIPS)}")
    nd = len(decays)
    num_in = ft.num_features(nd, nd)
    num_const = 2 * num_freqs + 1 + lstm_to_ff
    num_tensor_feats = 3 * nd + 2 * nd + 3 + 2 + 5 + 3 + from_mlp + from_lstm
    # m_i / sqrt(v_i) for the decay closest to 0.9 (features.per_param_features order)
    adam_i = int(np.argmin([abs(d - 0.9) for d in decays]))
    skip_index = 2 + 2 * nd + adam_i if skip == "adam" else None

    init = jit_init(_init_theta, num_tensor_feats=num_tensor_feats, lstm_hidden=lstm_hidden,
                    lstm_to_ff=lstm_to_ff, from_lstm=from_lstm, num_in=num_in,
                    num_const=num_const, hidden=hidden, num_out=2 + from_mlp,
                    skip_index=skip_index)

    name = "hierarchical"

    def optimizer(theta: dict, *, num_steps: int = DEFAULT_NUM_STEPS):
        num_steps = check_num_steps(name, num_steps)

        def init_state(params):
            lay = flat.layout(params)
            n, nt, dt = lay.total, lay.num_tensors, lay.dtype
            zeros = jnp.zeros((nt, lstm_hidden), dt)
            return HierarchicalState(
                jnp.zeros((), jnp.int32), jnp.zeros((nd, n), dt), jnp.zeros((nd, n), dt),
                zeros, zeros, jnp.zeros((nt, from_mlp), dt), jnp.zeros((from_lstm,), dt),
                _norm_init(dt), _norm_init(dt))

        def update(updates, state, params=None, **extra):
            params = require(name, "params", params)
            loss = require(name, "loss", extra.get("loss"))
            lay = flat.layout(updates)
            nt, sdt = lay.num_tensors, state.mom.dtype
            cdt = compute_dtype(theta, state.mom)
            k, t = step_and_budget(extra, state.count, num_steps, cdt)
            train_norm, valid_norm, loss_feats = _loss_features(
                state.train_norm, state.valid_norm, loss, extra.get("valid_loss"))

            g, p = flat.flatten(updates, lay), flat.flatten(params, lay)
            g, p = g.astype(sdt), p.astype(sdt)
            b = jnp.asarray(decays, sdt)[:, None]
            mom = b * state.mom + (1.0 - b) * g[None, :]
            rms = b * state.rms + (1.0 - b) * jnp.square(g)[None, :]
            ms, vs = flat.unstack(mom), flat.unstack(rms)
            terms = [*ft.second_moment_terms(g, p, ms, vs), *ms, *vs, *map(jnp.square, vs), p]
            stats = flat.per_tensor_means(terms, lay)  # [T, K]
            stats_ff, stats_t = jnp.split(stats, [num_in], axis=1)
            z = _tensor_features(stats_ff, stats_t, nd, lay, loss_feats, state.from_mlp,
                                 state.from_lstm)
            h, c = layers.lstm(theta["lstm"], z, state.lstm_h, state.lstm_c)
            new_from_lstm = jnp.mean(layers.dense(theta["to_lstm"], h), axis=0)
            const = jnp.concatenate([
                jnp.broadcast_to(ft.step_embedding(k, t, num_freqs), (nt, 2 * num_freqs)),
                jnp.full((nt, 1), math.log(nt) - 1.0, cdt),
                layers.dense(theta["to_ff"], h).astype(cdt)], axis=1)
            o = ppnet.apply_net_flat(theta["mlp"], ft.per_param_features(g, p, ms, vs),
                                     ft.normalizer_scales(stats_ff), const, lay)
            step = o[0] * jnp.exp(o[1] * exp_mult) * step_mult
            new_state = HierarchicalState(
                optax.safe_increment(state.count), mom, rms, h.astype(sdt), c.astype(sdt),
                flat.per_tensor_means(o[2:], lay).astype(sdt), new_from_lstm.astype(sdt),
                train_norm, valid_norm)
            return flat.unflatten(-step, lay), new_state

        return optax.GradientTransformationExtraArgs(init_state, update)

    return LearnedOptimizer(init, optimizer, name)


def _init_theta(key, num_tensor_feats, lstm_hidden, lstm_to_ff, from_lstm, num_in, num_const,
                hidden, num_out, skip_index) -> dict:
    k_top, k_mlp = jax.random.split(key)
    z = layers.normals(k_top, layers.lstm_shapes(num_tensor_feats, lstm_hidden)
                       + layers.dense_shapes(lstm_hidden, lstm_to_ff)
                       + layers.dense_shapes(lstm_hidden, from_lstm))
    return {
        "lstm": layers.lstm_init(z[:2]),
        "to_ff": layers.dense_init(z[2:3]),
        "to_lstm": layers.dense_init(z[3:4]),
        "mlp": ppnet.init_net(k_mlp, num_in, num_const, hidden, num_out, skip_index,
                              0.1 if skip_index is not None else 1.0),
    }


def _loss_features(train_norm, valid_norm, loss, valid):
    """Updated loss normalizers and ``[f_train, f_valid, has_valid]`` (module docstring)."""
    train_norm = _norm_update(train_norm, loss, TRAIN_DECAY)
    mu, var = _corrected(train_norm, TRAIN_DECAY)
    inv_sd = jax.lax.rsqrt(var + 1e-8)
    f_train = jnp.clip((jnp.asarray(loss).astype(mu.dtype) - mu) * inv_sd, -5.0, 5.0)
    if valid is None:
        return train_norm, valid_norm, jnp.stack([f_train, jnp.zeros_like(f_train),
                                                  -jnp.ones_like(f_train)])
    valid_norm = _norm_update(valid_norm, valid, VALID_DECAY)
    f_valid = jnp.clip((_corrected(valid_norm, VALID_DECAY)[0] - mu) * inv_sd, -5.0, 5.0)
    return train_norm, valid_norm, jnp.stack([f_train, f_valid, jnp.ones_like(f_train)])


def _tensor_features(stats_ff, stats_t, nd, lay, loss_feats, from_mlp, from_lstm):
    """The per-tensor LSTM inputs ``z``: [T, I], from the one-pass statistics.

    ``stats_ff``: ``[T, F]`` feature second moments (``E g^2, E p^2, E m_i^2, ...``);
    ``stats_t``: ``[T, 3 nd + 1]``: ``E m_i``, ``E v_i``, ``E v_i^2``, ``E p``.
    """
    nt = lay.num_tensors
    msq_g, msq_p, msq_m, _ = jnp.split(stats_ff, [1, 2, 2 + nd], axis=1)
    mean_m, mean_v, msq_v, mean_p = jnp.split(stats_t, [nd, 2 * nd, 3 * nd], axis=1)
    var_m = jnp.maximum(msq_m - jnp.square(mean_m), 0.0)
    var_v = jnp.maximum(msq_v - jnp.square(mean_v), 0.0)
    var_p = jnp.maximum(msq_p - jnp.square(mean_p), 0.0)
    dt = stats_ff.dtype
    sizes = jnp.asarray(lay.sizes, dt)
    # ||p||, ||g|| with eps inside the root (finite derivative at 0)
    norms = jnp.sqrt(jnp.concatenate([msq_p, msq_g], axis=1) * sizes[:, None] + 1e-12)
    shape_feats = jnp.asarray(np.stack([_shape_feats(s) for s in lay.shapes]), dt)
    return jnp.concatenate([
        _log_feat(mean_m), jnp.sign(mean_m), _log_feat(var_m), _log_feat(mean_v),
        _log_feat(var_v),
        _log_feat(mean_p), jnp.sign(mean_p), _log_feat(var_p),
        _log_feat(norms), shape_feats, jnp.broadcast_to(loss_feats.astype(dt), (nt, 3)),
        from_mlp.astype(dt), jnp.broadcast_to(from_lstm.astype(dt), (nt, from_lstm.shape[0])),
    ], axis=1)
