"""Part (a): tuning an L2 strength through a best-response hypernetwork (Lorraine & Duvenaud
2018) vs a grid search and the greedy hypergradient, on digits with 50 training images.

Per seed: 50 random images of the digits train split (overfitting is easy: 650 parameters),
the full valid (359) and test (359) splits. Model: linear softmax ``x W + b`` on the 64 pixels
(the paper's linear MNIST model), ``L_train(w, lam) = CE_train(w) + exp(lam) |w|^2``,
``L_val = CE_valid``. The *inner procedure* (grid, greedy and the retraining of every tuned
``lam``) is full-batch Adam (lr 0.1, K = 500 steps from w = 0), run on the library's inner
engine (:func:`metaopt.inner_problem`); the test loss of a tuned ``lam`` is the test
cross-entropy of that procedure at ``lam``.

* grid: ``lam`` in -12, -11, ..., 0; the best by validation loss, and its interval (the
  neighbouring grid points);
* global hypernetwork: :func:`metaopt.hypernet.mlp_hypernet` (50 tanh units) trained 5,000
  Adam steps (lr 3e-3, cosine decay, 16 draws per step) on
  ``E_{lam ~ N(-6, 3^2)} L_train(w(lam), lam)``, then ``lam`` tuned by 300 Adam steps (lr 0.2,
  cosine decay) on ``L_val(w(lam))`` from ``lam_0 = -3``;
* local hypernetwork: :func:`metaopt.hypernet.linear_hypernet` alternating (Algorithm 2):
  300 rounds of 10 hypernetwork steps on ``lam ~ N(lam_hat, 0.5^2)`` and 1 step of
  ``lam_hat`` (Adam, lr 0.05), from ``lam_0 = -3``;
* greedy: :func:`metaopt.hypergrad.greedy` (gamma 0.99) online on the inner procedure
  (unrolls of 25 steps, episodes of K = 500), 400 outer Adam steps (lr 0.05) from -3.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from metaopt import hypergrad as hg
from metaopt import hypernet
from metaopt.inner import inner_problem, truncation
from metaopt.outer import outer_trainer
from metaopt.tasks import Task

N_TRAIN, K, INNER_LR = 50, 500, 0.1
GRID = tuple(float(v) for v in range(-12, 1))
LAM0, PRIOR_MEAN, PRIOR_STD, LOCAL_STD = -3.0, -6.0, 3.0, 0.5
HYPER_STEPS, TUNE_STEPS, HYPER_LR, LAM_LR, SAMPLES = 5000, 300, 3e-3, 0.05, 16
ROUNDS, ROUND_STEPS = 300, 10
GREEDY_T, GREEDY_GAMMA, GREEDY_STEPS = 25, 0.99, 400


def cross_entropy(params, x, y):
    logits = x @ params["w"] + params["b"][None]
    return jnp.mean(jax.nn.logsumexp(logits, -1)
                    - jnp.take_along_axis(logits, y[:, None], -1)[:, 0])


def sq_norm(params):
    return sum(jnp.sum(p ** 2) for p in jax.tree.leaves(params))


def train_loss(params, x, y, lam):
    return cross_entropy(params, x, y) + jnp.exp(lam) * sq_norm(params)


def zero_params():
    return {"w": jnp.zeros((64, 10)), "b": jnp.zeros((10,))}


def l2_task(data) -> Task:
    """The digits task on ``data = {split: (x [n, 64], y [n])}`` with full batches; the
    training loss takes ``hparams = lam`` (log L2 strength); validation is the plain CE."""

    def loss(params, b, hparams=None):
        ce = cross_entropy(params, b["x"], b["y"])
        return ce if hparams is None else ce + jnp.exp(hparams) * sq_norm(params)

    def batch(key, split):
        del key
        x, y = data[split]
        return {"x": x, "y": y}

    def metrics(params, b):
        return {"loss": cross_entropy(params, b["x"], b["y"])}

    return Task(init=lambda key: zero_params(), loss=loss, batch=batch, metrics=metrics,
                name="digits_linear_l2")


def inner(data, episode=K):
    return inner_problem(l2_task(data), optax.adam(INNER_LR, eps_root=1e-10),
                         schedule=truncation.constant(episode), hparams_fn=lambda lam: lam)


def retrain(data, lam):
    """The inner procedure at ``lam``: the parameters after K steps (episodes one step longer,
    so that the last step does not reset)."""
    ip = inner(data, K + 1)
    key = jax.random.key(0)
    state = ip.init(key, lam)
    return ip.unroll(key, lam, state, K)[0].params


def grid_search(data):
    """Validation and test CE of the inner procedure at every grid point ``[len(GRID)]``."""
    params = jax.vmap(lambda lam: retrain(data, lam))(jnp.asarray(GRID))
    val = jax.vmap(lambda p: cross_entropy(p, *data["valid"]))(params)
    test = jax.vmap(lambda p: cross_entropy(p, *data["test"]))(params)
    return val, test


def global_hypernet(data, key, hyper_steps=HYPER_STEPS, tune_steps=TUNE_STEPS):
    net = hypernet.mlp_hypernet(zero_params(), hidden=50, center=PRIOR_MEAN, scale=PRIOR_STD)
    k_init, k_fit = jax.random.split(key)
    phi, _, losses = hypernet.fit_hypernet(
        net, lambda p, lam: train_loss(p, *data["train"], lam[0]), net.init(k_init), k_fit,
        mean=PRIOR_MEAN, std=PRIOR_STD, steps=hyper_steps,
        optimizer=optax.adam(optax.cosine_decay_schedule(HYPER_LR, hyper_steps)),
        num_samples=SAMPLES)
    val = lambda p: cross_entropy(p, *data["valid"])  # noqa: E731
    lam, _, _ = hypernet.tune_lambda(
        net, val, phi, jnp.asarray(LAM0), steps=tune_steps,
        optimizer=optax.adam(optax.cosine_decay_schedule(4 * LAM_LR, tune_steps)))
    return lam[0], net.apply(phi, lam), losses[-100:].mean()


def local_hypernet(data, key, rounds=ROUNDS):
    net = hypernet.linear_hypernet(zero_params())
    phi = net.init(key)
    out = hypernet.alternate(
        net, lambda p, lam: train_loss(p, *data["train"], lam[0]),
        lambda p: cross_entropy(p, *data["valid"]), phi, jnp.asarray(LAM0), key,
        rounds=rounds, hyper_steps=ROUND_STEPS, lam_steps=1, std=LOCAL_STD,
        hyper_optimizer=optax.adam(HYPER_LR), lam_optimizer=optax.adam(LAM_LR))
    return out.lam[0], net.apply(out.phi, out.lam), out.lam_path[:, 0]


def greedy(data, key, outer_steps=GREEDY_STEPS):
    est = hg.greedy(inner(data), gamma=GREEDY_GAMMA, unroll_length=GREEDY_T)
    trainer = outer_trainer(est, optax.adam(LAM_LR))
    k_init, k_run = jax.random.split(key)
    state = trainer.init(k_init, jnp.asarray(LAM0))
    state, metrics = jax.lax.scan(lambda s, k: trainer.step(k, s), state,
                                  jax.random.split(k_run, outer_steps))
    return state.theta, metrics["vjps"][-1]
