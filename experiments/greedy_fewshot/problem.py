"""The few-shot bilevel problem: a CNN backbone (alpha) and a linear head trained inner-loop.

Digits classes are split in halves: 0-4 for meta-training, 5-9 for meta-testing. An episode
draws ``n`` of its half's 5 classes, and per class ``shots`` support and ``queries`` query
images (without replacement, from the first 170 images of the class). Labels are the classes'
positions ``0..n-1``. The pools and the episode sampler live in :mod:`metaopt.tasks.fewshot`.

    features f_alpha(x): conv3x3(32) -> relu -> conv3x3(32, stride 2) -> relu
                         -> conv3x3(32, stride 2) -> relu -> mean over space       [., 32]
    head w = (W [32, n], b [n], momenta), zero at the start of an episode
    Phi: heavy-ball SGD (lr 0.1, momentum 0.9) on CE(f_alpha(x_s) W + b, y_s), full batch
    L_val = CE(f_alpha(x_q) W + b, y_q)

``alpha`` enters through ``context(alpha, cfg) = (f_alpha(x_s), f_alpha(x_q))`` (see
:class:`metaopt.hypergrad.Bilevel`): the backbone runs once per episode and each estimator's
result is pulled back through it with one VJP, exactly.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt import hypergrad as hg
from metaopt.tasks.fewshot import PER_CLASS, class_pools, cross_entropy, sample_episode

__all__ = ["PER_CLASS", "Backbone", "class_pools", "episode_accuracy", "fewshot_bilevel",
           "head_logits", "sample_episode"]

LR, MOMENTUM = 0.1, 0.9


class Backbone(nn.Module):
    channels: int = 32

    @nn.compact
    def __call__(self, x):
        for stride in (1, 2, 2):
            x = jax.nn.relu(nn.Conv(self.channels, (3, 3), strides=(stride, stride))(x))
        return jnp.mean(x, axis=(1, 2))


def head_logits(w, feats):
    return feats @ w["W"] + w["b"][None, :]


def fewshot_bilevel(pools, n_way: int, *, shots: int = 10, queries: int = 10, horizon: int = 10,
                    channels: int = 32) -> tuple[hg.Bilevel, Backbone]:
    """The bilevel problem on ``pools`` (the meta-train or the meta-test half)."""
    backbone = Backbone(channels)

    def init(key, alpha):
        cfg = sample_episode(key, pools, n_way, shots, queries)
        zeros = {"W": jnp.zeros((channels, n_way)), "b": jnp.zeros((n_way,))}
        return cfg, {"head": zeros, "mom": jax.tree.map(jnp.zeros_like, zeros)}

    def context(alpha, cfg):
        return {"fs": backbone.apply(alpha, cfg["xs"]), "fq": backbone.apply(alpha, cfg["xq"])}

    def batch(key, cfg):
        del key
        return {"ys": cfg["ys"], "yq": cfg["yq"]}

    def phi(w, ctx, b):
        g = jax.grad(lambda h: cross_entropy(head_logits(h, ctx["fs"]), b["ys"]))(w["head"])
        mom = jax.tree.map(lambda m, gi: gi + MOMENTUM * m, w["mom"], g)
        head = jax.tree.map(lambda p, m: p - LR * m, w["head"], mom)
        return {"head": head, "mom": mom}

    def val_loss(w, ctx, b):
        return cross_entropy(head_logits(w["head"], ctx["fq"]), b["yq"])

    bl = hg.Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon,
                    context=context, name=f"digits_{n_way}way_{shots}shot")
    return bl, backbone


def episode_accuracy(bl: hg.Bilevel, alpha, key) -> jax.Array:
    """Query accuracy after the inner loop on one episode."""
    cfg, w = bl.init(key, alpha)
    ctx = bl.context(alpha, cfg)
    b = bl.batch(key, cfg)
    w = jax.lax.fori_loop(0, bl.horizon, lambda _, w: bl.phi(w, ctx, b), w)
    return jnp.mean(jnp.argmax(head_logits(w["head"], ctx["fq"]), -1) == cfg["yq"])
