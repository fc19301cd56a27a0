"""The few-shot bilevel problem: a CNN backbone (alpha) and a linear head trained inner-loop.

Digits classes are split in halves: 0-4 for meta-training, 5-9 for meta-testing. An episode
draws ``n`` of its half's 5 classes, and per class ``shots`` support and ``queries`` query
images (without replacement, from the first 170 images of the class). Labels are the classes'
positions ``0..n-1``.

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
import numpy as np

from metaopt import hypergrad as hg
from metaopt import tasks

PER_CLASS, LR, MOMENTUM = 170, 0.1, 0.9


class Backbone(nn.Module):
    channels: int = 32

    @nn.compact
    def __call__(self, x):
        for stride in (1, 2, 2):
            x = jax.nn.relu(nn.Conv(self.channels, (3, 3), strides=(stride, stride))(x))
        return jnp.mean(x, axis=(1, 2))


def class_pools() -> np.ndarray:
    """``[10, PER_CLASS, 8, 8, 1]`` float32 images by class (all digits splits pooled)."""
    data = tasks.load_digits()
    x = np.concatenate([data.splits[s][0] for s in ("train", "valid", "test")])
    y = np.concatenate([data.splits[s][1] for s in ("train", "valid", "test")])
    return np.stack([x[y == c][:PER_CLASS] for c in range(10)]).astype(np.float32)


def sample_episode(key, pools, n_way: int, shots: int, queries: int) -> dict:
    """One episode from ``pools`` ``[5, PER_CLASS, ...]`` (one half of the classes)."""
    k_cls, k_img = jax.random.split(key)
    classes = jax.random.permutation(k_cls, pools.shape[0])[:n_way]
    idx = jax.vmap(lambda k: jax.random.permutation(k, pools.shape[1])[: shots + queries])(
        jax.random.split(k_img, n_way))
    imgs = jax.vmap(lambda c, i: pools[c][i])(classes, idx)  # [n, shots + queries, 8, 8, 1]
    labels = jnp.broadcast_to(jnp.arange(n_way)[:, None], (n_way, shots + queries))

    def part(a, lo, hi):
        return a[:, lo:hi].reshape(n_way * (hi - lo), *a.shape[2:])

    return {"xs": part(imgs, 0, shots), "ys": part(labels, 0, shots),
            "xq": part(imgs, shots, shots + queries), "yq": part(labels, shots, shots + queries)}


def _ce(logits, labels):
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


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
        g = jax.grad(lambda h: _ce(head_logits(h, ctx["fs"]), b["ys"]))(w["head"])
        mom = jax.tree.map(lambda m, gi: gi + MOMENTUM * m, w["mom"], g)
        head = jax.tree.map(lambda p, m: p - LR * m, w["head"], mom)
        return {"head": head, "mom": mom}

    def val_loss(w, ctx, b):
        return _ce(head_logits(w["head"], ctx["fq"]), b["yq"])

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
