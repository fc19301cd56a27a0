"""MAML on few-shot digits: the model, the loss, the Bilevels and the meta-test evaluation.

Episodes: :func:`metaopt.tasks.fewshot.sample_episode` (classes 0-4 meta-train, 5-9
meta-test). Model: :class:`metaopt.tasks.fewshot.FewShotCNN` (3x3 PatchConv layers, ReLU,
mean pool, a dense 5-way head). MAML and FOMAML are :func:`metaopt.hypergrad.maml` Bilevels,
differentiated exactly by :func:`metaopt.hypergrad.rmd` (``first_order`` stops the gradient
through the inner gradients). The pretrain-then-finetune baseline adapts with the same inner
step (:func:`metaopt.hypergrad.maml_adapt`) from a supervised network whose head is zeroed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metaopt import hypergrad as hg
from metaopt.tasks.fewshot import FewShotCNN, accuracy, cross_entropy, sample_episode

N_WAY = 5


def make_loss(model: FewShotCNN):
    def loss(params, x, y):
        return cross_entropy(model.apply(params, x), y)

    return loss


def bilevel(pools, model, *, shots, queries, inner_lr, steps, first_order=False):
    """The MAML Bilevel on ``pools`` (one half of the classes)."""
    sample = lambda key: sample_episode(key, pools, N_WAY, shots, queries)  # noqa: E731
    return hg.maml(sample, make_loss(model), inner_lr=inner_lr, steps=steps,
                   first_order=first_order, name=f"digits_{N_WAY}way_{shots}shot")


def meta_test(bl, model, alpha, keys, steps):
    """Mean query accuracy over episodes ``keys`` after ``steps`` inner steps from ``alpha``."""

    def one(key):
        cfg, w0 = bl.init(key, alpha)
        w = hg.maml_adapt(bl, w0, cfg, steps)
        return accuracy(model.apply(w, cfg["xq"]), cfg["yq"])

    return jnp.mean(jax.vmap(one)(keys))


def zero_head(params):
    """``params`` with the final dense layer set to zero (a fresh head for new labels)."""
    inner = dict(params["params"])
    last = max((k for k in inner if k.startswith("Dense")), key=lambda k: int(k.split("_")[1]))
    inner[last] = jax.tree.map(jnp.zeros_like, inner[last])
    return {**params, "params": inner}


def pretrain(key, model, pools, *, steps, batch, lr):
    """Supervised training on all images of ``pools`` ``[C, N, ...]`` (``C``-way), Adam."""
    x = pools.reshape(-1, *pools.shape[2:])
    y = jnp.repeat(jnp.arange(pools.shape[0]), pools.shape[1])
    k_init, k_run = jax.random.split(key)
    params = model.init(k_init, x[:1])
    opt = optax.adam(lr)
    loss = make_loss(model)

    def step(carry, k):
        p, s = carry
        idx = jax.random.choice(k, x.shape[0], (batch,), replace=False)
        value, g = jax.value_and_grad(loss)(p, x[idx], y[idx])
        u, s = opt.update(g, s, p)
        return (optax.apply_updates(p, u), s), value

    (params, _), losses = jax.lax.scan(step, (params, opt.init(params)),
                                       jax.random.split(k_run, steps))
    return params, losses
