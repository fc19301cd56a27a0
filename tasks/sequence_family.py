"""Next-token prediction on random Markov chains with a tiny RNN (generated data).

A task is a Markov chain over a vocabulary of ``V`` tokens with transition matrix

    T = softmax_rows(g Z),   Z_ij ~ N(0, 1),   log g ~ U(log g_lo, log g_hi)

(the task's config; ``g``, the *sharpness*, sets how predictable the chain is: ``g -> 0`` is
uniform noise, large ``g`` nearly deterministic). A batch is ``B`` sequences
``x_0..x_L``, ``x_0 ~ U{0..V-1}``, ``x_{t+1} ~ T[x_t, :]``, generated on the fly from the
batch key (inverse-CDF sampling from one ``[L, B]`` uniform draw, ``lax.scan`` over time).

The model reads ``x_0..x_{L-1}`` (one-hot) with an RNN of ``H`` units, ``h_0 = 0``:

* ``cell="elman"`` (default; several times cheaper than the GRU on CPU):
  ``h_t = tanh(W_in[x_t] + h_{t-1} W_h + b)``;
* ``cell="gru"`` (Cho et al. 2014): ``[a_z, a_r, a_n] = W_in[x_t] + b`` (each ``[H]``),
  ``z = sigma(a_z + h W_hz)``, ``r = sigma(a_r + h W_hr)``, ``n = tanh(a_n + r * (h W_hn))``,
  ``h_t = (1 - z) n + z h_{t-1}``;

and predicts ``logits_t = h_t W_out + b_out``. The loss is the mean cross-entropy
``L = -1/(B L) sum_{b,t} log softmax(logits_t)_{x_{t+1}}``; its floor is the chain's
entropy rate, reported per batch as the metric ``bayes_loss = mean -log T[x_t, x_{t+1}]``.
Kernels are ``init_scale`` times LeCun-normal (std ``init_scale / sqrt(fan_in)``, fan-in ``V``
for ``W_in``, ``H`` otherwise), ``init_scale`` log-uniform per task; biases zero.
Params (V=8, H=32): Elman 1,576, GRU 4,200. Sources: the RNN language-model tasks of the
learned-optimizer suites (Metz et al. 2022, learned_optimization), on a synthetic chain.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.augment import maybe_augment
from metaopt.tasks.base import SPLITS, Task, TaskFamily, check_split
from metaopt.tasks.classification import cross_entropy
from metaopt.tasks.family_common import check_range, log_uniform

CELLS = ("gru", "elman")


class SequenceConfig(NamedTuple):
    """One task of :func:`sequence_family`."""

    transition: jax.Array  # float32[V, V], rows sum to 1
    log_init_scale: jax.Array  # float32[]


def markov_sequences(key: jax.Array, transition: jax.Array, batch_size: int,
                     length: int) -> jax.Array:
    """``batch_size`` chains of ``length + 1`` tokens; ``x_0`` uniform. ``int32[B, L+1]``."""
    vocab = transition.shape[0]
    k0, k_u = jax.random.split(key)
    x0 = jax.random.randint(k0, (batch_size,), 0, vocab)
    cdf = jnp.cumsum(transition, axis=1)
    u = jax.random.uniform(k_u, (length, batch_size))

    def step(x, u_t):
        nxt = jnp.minimum(jnp.sum(cdf[x] < u_t[:, None], axis=1), vocab - 1).astype(x.dtype)
        return nxt, nxt

    _, xs = jax.lax.scan(step, x0, u)
    return jnp.concatenate([x0[:, None], xs.T], axis=1)


def rnn_init(key: jax.Array, cell: str, vocab: int, hidden: int, scale: jax.Array) -> dict:
    """RNN params (module docstring): kernels ``scale * N(0, 1/fan_in)``, biases zero."""
    gates = 3 if cell == "gru" else 1
    k_in, k_h, k_out = jax.random.split(key, 3)
    lecun = lambda k, shape: scale * jax.random.normal(k, shape) / jnp.sqrt(shape[0])
    return {"w_in": lecun(k_in, (vocab, gates * hidden)),
            "w_h": lecun(k_h, (hidden, gates * hidden)),
            "b": jnp.zeros((gates * hidden,)),
            "w_out": lecun(k_out, (hidden, vocab)),
            "b_out": jnp.zeros((vocab,))}


def rnn_logits(params: dict, cell: str, tokens: jax.Array) -> jax.Array:
    """Logits ``[B, T, V]`` for input tokens ``[B, T]`` (``lax.scan`` over time)."""
    hidden = params["w_h"].shape[0]
    # [T, B, gates * H]
    inputs = jnp.take(params["w_in"], tokens.T, axis=0) + params["b"][None, None, :]

    def step(h, a):
        if cell == "elman":
            h = jnp.tanh(a + h @ params["w_h"])
        else:
            hw = h @ params["w_h"]
            z = jax.nn.sigmoid(a[:, :hidden] + hw[:, :hidden])
            r = jax.nn.sigmoid(a[:, hidden:2 * hidden] + hw[:, hidden:2 * hidden])
            n = jnp.tanh(a[:, 2 * hidden:] + r * hw[:, 2 * hidden:])
            h = (1.0 - z) * n + z * h
        return h, h

    h0 = jnp.zeros((tokens.shape[0], hidden), inputs.dtype)
    _, hs = jax.lax.scan(step, h0, inputs)  # [T, B, H]
    return jnp.swapaxes(hs @ params["w_out"] + params["b_out"][None, None, :], 0, 1)


def sequence_family(
    vocab_size: int = 8,
    length: int = 16,
    hidden: int = 32,
    cell: str = "elman",
    batch_size: int = 32,
    sharpness_range: tuple[float, float] = (0.5, 4.0),
    init_scale_range: tuple[float, float] = (0.5, 2.0),
    augment_scale_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """RNN next-token prediction on random Markov chains; see the module docstring.

    ``augment_scale_range``: ``(lo, hi)`` turns on per-task parameter rescaling
    (:func:`tasks.augment.augment_scales`); ``None`` (default) leaves the tasks as they are.
    """
    if isinstance(vocab_size, int) and not isinstance(vocab_size, bool) and vocab_size == 1:
        raise ValueError("vocab_size: must be at least 2, got 1; allowed: integers >= 2")
    validate.positive_int("vocab_size", vocab_size)
    validate.positive_int("length", length)
    validate.positive_int("hidden", hidden)
    validate.one_of("cell", cell, CELLS)
    validate.positive_int("batch_size", batch_size)
    g_range = check_range("sharpness_range", sharpness_range, validate.positive_float)
    s_range = check_range("init_scale_range", init_scale_range, validate.positive_float)
    name = f"markov_{cell}_v{vocab_size}_h{hidden}_l{length}"

    def sample(key):
        k_z, k_u = jax.random.split(key)
        u = jax.random.uniform(k_u, (2,))
        z = jax.random.normal(k_z, (vocab_size, vocab_size))
        return SequenceConfig(jax.nn.softmax(jnp.exp(log_uniform(u[0], *g_range)) * z, axis=1),
                              log_uniform(u[1], *s_range))

    def task(cfg: SequenceConfig) -> Task:
        def init(key):
            return rnn_init(key, cell, vocab_size, hidden, jnp.exp(cfg.log_init_scale))

        def batch(key, split):
            key = jax.random.fold_in(key, SPLITS.index(check_split(split)))
            return {"tokens": markov_sequences(key, cfg.transition, batch_size, length)}

        def per_token(params, b):
            logits = rnn_logits(params, cell, b["tokens"][:, :-1])
            targets = b["tokens"][:, 1:]
            ce = cross_entropy(logits.reshape(-1, vocab_size), targets.reshape(-1))
            return logits, targets, ce

        def loss(params, b, hparams=None):
            return jnp.mean(per_token(params, b)[2])

        def metrics(params, b):
            logits, targets, ce = per_token(params, b)
            bayes = -jnp.log(cfg.transition[b["tokens"][:, :-1], targets])
            return {"loss": jnp.mean(ce), "accuracy": jnp.mean(jnp.argmax(logits, -1) == targets),
                    "bayes_loss": jnp.mean(bayes)}

        return Task(init=init, loss=loss, batch=batch, metrics=metrics, name=name)

    return maybe_augment(TaskFamily(sample=sample, task=task, name=name), augment_scale_range)
