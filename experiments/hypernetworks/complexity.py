"""Part (b): one hypernetwork for the whole accuracy-vs-pruning curve (Grebenkova, Bakhteev &
Strijov 2023; the seed's CIFAR-10 figure), on digits.

Model: the digits MLP 64-32-10 (ReLU, 2,410 parameters). A variational hypernetwork
(:func:`metaopt.hypernet.mlp_hypernet`, 50 tanh units, input ``log10 lam``) outputs the mean
and log standard deviation of a Gaussian over the MLP's parameters; it is trained 2,000 Adam
steps (lr 1e-3, batches of 128 of the 1,079 training images, 4 draws of ``lam`` per step,
``log10 lam ~ U(-3, 1)``) on the complexity-controlled objective of
:mod:`metaopt.complexity_control` (KL to ``N(0, 1)``, weight ``lam / N``). Then, for each
``lam`` of :data:`LAMS`, the mean network ``mu(lam)`` is magnitude-pruned at fractions
:data:`FRACTIONS` and evaluated on the test split (359 images); the fraction of parameters
below :data:`THRESHOLD` in magnitude measures the complexity ``lam`` buys.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metaopt import complexity_control as cc
from metaopt import hypernet
from metaopt.tasks.models import MLP

LAMS = (0.001, 0.01, 0.1, 1.0, 10.0)
FRACTIONS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98)
THRESHOLD = 0.05
LOG_LOW, LOG_HIGH = -3.0, 1.0
STEPS, BATCH, DRAWS, LR, PRIOR_STD = 2000, 128, 4, 1e-3, 1.0

MODEL = MLP(hidden=(32,), out=10)


def nll(params, x, y):
    logits = MODEL.apply({"params": params}, x)
    return jnp.mean(jax.nn.logsumexp(logits, -1)
                    - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def accuracy(params, x, y):
    return jnp.mean(jnp.argmax(MODEL.apply({"params": params}, x), -1) == y)


def make_hypernet(key):
    template = MODEL.init(key, jnp.zeros((1, 64)))["params"]
    center, scale = (LOG_LOW + LOG_HIGH) / 2, (LOG_HIGH - LOG_LOW) / 2
    return hypernet.mlp_hypernet(cc.variational_template(template), hidden=50,
                                 center=center, scale=scale)


def train(data, key, steps=STEPS):
    """Train one hypernetwork; returns ``(phi, losses[steps])``."""
    k_model, k_init, k_run = jax.random.split(key, 3)
    net = make_hypernet(k_model)
    x, y = data["train"]
    opt = optax.adam(LR)

    def step(carry, k):
        phi, s = carry
        k_batch, k_lam, k_w = jax.random.split(k, 3)
        idx = jax.random.choice(k_batch, y.shape[0], (BATCH,), replace=False)
        lams = cc.sample_log_uniform(k_lam, 10.0 ** LOG_LOW, 10.0 ** LOG_HIGH, (DRAWS,))
        loss, g = jax.value_and_grad(lambda p: cc.complexity_loss(
            net, lambda w: nll(w, x[idx], y[idx]), p, k_w, lams, num_train=y.shape[0],
            prior_std=PRIOR_STD))(phi)
        upd, s = opt.update(g, s, phi)
        return (optax.apply_updates(phi, upd), s), loss

    phi = net.init(k_init)
    (phi, _), losses = jax.lax.scan(step, (phi, opt.init(phi)), jax.random.split(k_run, steps))
    return phi, losses


def evaluate(data, key, phi):
    """``accuracy [len(LAMS), len(FRACTIONS)]`` of the pruned mean networks and
    ``pruned [len(LAMS)]`` (fraction of ``|mu| < THRESHOLD``)."""
    net = make_hypernet(jax.random.split(key, 3)[0])
    x, y = data["test"]

    def per_lam(lam):
        mu = net.apply(phi, jnp.log10(lam))["mu"]
        acc = jax.vmap(lambda f: accuracy(cc.magnitude_prune(mu, f), x, y))(
            jnp.asarray(FRACTIONS))
        return acc, cc.pruned_fraction(mu, THRESHOLD)

    return jax.vmap(per_lam)(jnp.asarray(LAMS))


def run(data, key, steps=STEPS):
    phi, losses = train(data, key, steps)
    acc, pruned = evaluate(data, key, phi)
    return {"accuracy": acc, "pruned_at_threshold": pruned, "final_loss": losses[-100:].mean()}
