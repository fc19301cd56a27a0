"""A self-referential weight matrix meta-trained on few-shot digits episodes.

The episode is a sequence (Irie et al. 2022's few-shot setting with synchronous labels): the
``n k`` support pairs in random order, each fed as

    x_t = tanh(E [f(x_img); onehot(y)])            (f: the CNN features, E: a dense layer)

to the SRWM (:mod:`metaopt.tasks.srwm`), which rewrites itself at every step. Then each query
is read from the matrix the support set left behind, without a label and without updating it,
so queries cannot inform each other:

    logits_q = D y_q,   y_q = W_S^y tanh(E [f(x_q); 0]).

Slow weights ``alpha = {cnn, E, W_0, D}`` are meta-trained by exact backprop through the
sequence: the problem is a :class:`metaopt.hypergrad.Bilevel` whose iterate is the fast weight
``(W_t, t)``, ``Phi`` one SRWM step on support item ``t``, ``L_val`` the query cross-entropy,
``context`` the embedded support and query sets (the CNN runs once per episode), and the
meta-gradient is :func:`metaopt.hypergrad.rmd` (it differentiates ``W_0`` through the
episode's init too). The same episodes as experiments/maml: ``sample_episode(key, ...)``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt import hypergrad as hg
from metaopt.tasks.fewshot import FewShotCNN, accuracy, cross_entropy, sample_episode
from metaopt.tasks.srwm import srwm_init, srwm_read, srwm_step

N_WAY = 5


class Embed(nn.Module):
    """``x_t = tanh(E [f(x); onehot])``: CNN features and the label one-hot, to ``d_model``."""

    channels: tuple[int, ...]
    d_model: int

    @nn.compact
    def __call__(self, x, onehot):
        f = FewShotCNN(self.channels, out=0)(x)
        return jnp.tanh(nn.Dense(self.d_model)(jnp.concatenate([f, onehot], axis=-1)))


def init_alpha(key, channels, d_model, heads, scale=1.0):
    k1, k2, k3 = jax.random.split(key, 3)
    embed = Embed(tuple(channels), d_model)
    head = nn.Dense(N_WAY)
    return {"embed": embed.init(k1, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, N_WAY))),
            "W0": srwm_init(k2, d_model, d_model, heads, scale),
            "out": head.init(k3, jnp.zeros((1, d_model)))}


def srwm_bilevel(pools, *, shots, queries, channels, d_model, name="srwm"):
    """The meta-training problem on ``pools`` (module docstring)."""
    embed, head = Embed(tuple(channels), d_model), nn.Dense(N_WAY)
    horizon = N_WAY * shots

    def init(key, alpha):
        ep = sample_episode(key, pools, N_WAY, shots, queries)
        perm = jax.random.permutation(jax.random.fold_in(key, 7), horizon)
        ep = {**ep, "xs": ep["xs"][perm], "ys": ep["ys"][perm]}
        return ep, {"W": alpha["W0"], "t": jnp.zeros((), jnp.int32)}

    def context(alpha, cfg):
        zs = embed.apply(alpha["embed"], cfg["xs"], jax.nn.one_hot(cfg["ys"], N_WAY))
        zq = embed.apply(alpha["embed"], cfg["xq"], jnp.zeros((cfg["xq"].shape[0], N_WAY)))
        return {"zs": zs, "zq": zq, "out": alpha["out"]}

    def batch(key, cfg):
        del key
        return {"yq": cfg["yq"]}

    def phi(w, ctx, b):
        del b
        _, new = srwm_step(w["W"], ctx["zs"][w["t"]])
        return {"W": new, "t": w["t"] + 1}

    def val_loss(w, ctx, b):
        return cross_entropy(logits(w, ctx), b["yq"])

    def logits(w, ctx):
        y = jax.vmap(srwm_read, (None, 0))(w["W"], ctx["zq"])
        return head.apply(ctx["out"], y)

    bl = hg.Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon,
                    context=context, name=f"{name}_{N_WAY}way_{shots}shot")
    return bl, logits


def episode_accuracy(bl, logits, alpha, key, steps=None):
    """Query accuracy after reading ``steps`` (default: all) support items of one episode."""
    cfg, w = bl.init(key, alpha)
    ctx = bl.context(alpha, cfg)
    b = bl.batch(key, cfg)
    w = jax.lax.fori_loop(0, bl.horizon if steps is None else steps,
                          lambda _, w: bl.phi(w, ctx, b), w)
    return accuracy(logits(w, ctx), cfg["yq"])
