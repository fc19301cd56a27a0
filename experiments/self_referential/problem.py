"""A self-referential weight matrix meta-trained on few-shot digits episodes.

The episode is a sequence (Irie et al. 2022's few-shot setting with synchronous labels): the
``n k`` support pairs in random order, each fed to the SRWM (:mod:`metaopt.tasks.srwm`), which
rewrites itself at every step, as

    z_t = norm(E [f(x_t); onehot(y_t)])                  (slots=False, the original layout)
    z_t^h = [LN(E_h f(x_t)); onehot(y_t)]  per head h     (slots=True: the label in its own
                                                           coordinates of every head)

with ``f`` the CNN features of experiments/maml (plus the raw pixels with ``pixels=True``) and
``E`` a dense layer. Then each query is read from the matrix the support set left behind,
without a label (``onehot = 0``) and without updating it, so queries cannot inform each other:

    logits_q = D W_S^y z_q.

``route > 0`` starts ``W_0`` with its key rows reading the feature coordinates and its query
rows the label slots (:func:`metaopt.tasks.srwm.srwm_route`): the self-update then stores, at
a key made from the item's features, a value ``W (phi(q) - phi(k))`` that depends on its
label, which is what takes meta-training off the saddle at chance (README).

Slow weights ``alpha = {embed, W0, out}`` are meta-trained by exact backprop through the
sequence: the problem is a :class:`metaopt.hypergrad.Bilevel` whose iterate is the fast weight
``(W_t, t)``, ``Phi`` one SRWM step on support item ``t``, ``L_val`` the query cross-entropy,
``context`` the embedded support and query sets (the CNN runs once per episode), and the
meta-gradient is :func:`metaopt.hypergrad.rmd` (it differentiates ``W_0`` through the
episode's init too). ``train_embed=False`` keeps the embedding (CNN, ``E``, layer norm) at its
random initialization (:func:`outer_optimizer`). The same episodes as experiments/maml:
``sample_episode(key, ...)``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from metaopt import hypergrad as hg
from metaopt.tasks.fewshot import FewShotCNN, accuracy, cross_entropy, sample_episode
from metaopt.tasks.srwm import srwm_init, srwm_read, srwm_route, srwm_step

N_WAY = 5


@dataclasses.dataclass(frozen=True)
class Model:
    """Static configuration of the SRWM few-shot model (module docstring)."""

    channels: tuple[int, ...] = (8, 16, 16)
    d_model: int = 32
    heads: int = 4
    scale: float = 1.0  # W_0 ~ N(0, scale^2 / d) before routing
    norm: str = "tanh"  # "tanh" or "ln" (layer norm) on the embedded features
    slots: bool = False  # per head z^h = [norm(E_h f); onehot(y)]
    pixels: bool = False  # f(x) = [cnn(x); vec(x)]
    route: float = 0.0  # > 0 (needs slots): keys read the features, queries the label slots
    train_embed: bool = True  # False: CNN, E and norm stay at their random init

    def __post_init__(self):
        if self.norm not in ("tanh", "ln"):
            raise ValueError(f"norm: must be 'tanh' or 'ln', got {self.norm!r}")
        if self.route and not self.slots:
            raise ValueError("route: needs slots=True (the label slots the queries read)")
        if self.slots and self.d_model // self.heads <= N_WAY:
            raise ValueError(f"d_model: with slots each head needs more than {N_WAY} "
                             f"coordinates, got d_model={self.d_model}, heads={self.heads}")


class Embed(nn.Module):
    """``z = norm(E [f(x); onehot])``, or with ``slots`` per head ``[norm(E_h f(x)); onehot]``."""

    m: Model

    @nn.compact
    def __call__(self, x, onehot):
        m = self.m
        f = FewShotCNN(tuple(m.channels), out=0)(x)
        if m.pixels:
            f = jnp.concatenate([f, x.reshape(x.shape[0], -1)], axis=-1)
        width = m.d_model - m.heads * N_WAY if m.slots else m.d_model
        h = nn.Dense(width)(f if m.slots else jnp.concatenate([f, onehot], axis=-1))
        if m.slots:
            h = h.reshape(h.shape[0], m.heads, width // m.heads)
        h = nn.LayerNorm()(h) if m.norm == "ln" else jnp.tanh(h)
        if not m.slots:
            return h
        lab = jnp.broadcast_to(onehot[:, None, :], (h.shape[0], m.heads, N_WAY))
        return jnp.concatenate([h, lab], axis=-1).reshape(h.shape[0], m.d_model)


def init_alpha(key, m: Model):
    k1, k2, k3 = jax.random.split(key, 3)
    w0 = srwm_init(k2, m.d_model, m.d_model, m.heads, m.scale)
    if m.route:
        d = m.d_model // m.heads
        is_label = jnp.arange(d) >= d - N_WAY
        w0 = srwm_route(w0, ~is_label, is_label, m.route)
    return {"embed": Embed(m).init(k1, jnp.zeros((1, 8, 8, 1)), jnp.zeros((1, N_WAY))),
            "W0": w0, "out": nn.Dense(N_WAY).init(k3, jnp.zeros((1, m.d_model)))}


def outer_optimizer(m: Model, lr: float) -> optax.GradientTransformation:
    """Adam on ``alpha``; the embedding frozen at its init when ``m.train_embed`` is False."""
    if m.train_embed:
        return optax.adam(lr)
    return optax.multi_transform(
        {"train": optax.adam(lr), "frozen": optax.set_to_zero()},
        lambda alpha: {k: jax.tree.map(lambda _, k=k: "frozen" if k == "embed" else "train", v)
                       for k, v in alpha.items()})


def srwm_bilevel(pools, m: Model, *, shots, queries, name="srwm"):
    """The meta-training problem on ``pools`` (module docstring); also returns ``logits``."""
    embed, head = Embed(m), nn.Dense(N_WAY)
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
        return head.apply(ctx["out"], jax.vmap(srwm_read, (None, 0))(w["W"], ctx["zq"]))

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


def prototype_accuracy(pools, key, shots, queries):
    """No learning at all: nearest class mean of the raw pixels (squared Euclidean), the
    query accuracy of one episode of ``pools`` (a reference for what the digits allow)."""
    ep = sample_episode(key, pools, N_WAY, shots, queries)
    xs, xq = ep["xs"].reshape(N_WAY * shots, -1), ep["xq"].reshape(N_WAY * queries, -1)
    protos = jax.nn.one_hot(ep["ys"], N_WAY).T @ xs / shots  # [n, 64]
    dist = jnp.sum((xq[:, None, :] - protos[None, :, :]) ** 2, axis=-1)
    return accuracy(-dist, ep["yq"])  # nearest prototype = argmax of -distance
