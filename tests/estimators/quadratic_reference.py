"""Cheap diagonal quadratics and exact float64 references for the estimator tests.

SGD on ``L(w) = 1/2 sum_i lam_i (w_i - c_i)^2`` with learning rate ``eta_t`` contracts each
coordinate of ``z = w - c`` independently: ``z_{t+1} = (1 - eta_t lam) z_t``. The tests
compare estimators against these closed forms (no estimator code involved).
``tasks.quadratic_family`` is the same problem up to a rotation, to which SGD is invariant;
the diagonal form keeps compile times small on the 2-core test machine.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.inner import inner_problem, truncation
from metaopt.tasks.base import Task, TaskFamily

EIGS = np.geomspace(0.1, 1.0, 5)
CENTER = np.ones(5)
W0 = np.zeros(5)


def sgd_lr(theta):
    """The learnable SGD learning rate ``exp(theta["log_lr"])``."""
    return optax.sgd(jnp.exp(theta["log_lr"]))


def fixed_task(eigs=EIGS, center=CENTER, w0=W0) -> Task:
    """One deterministic quadratic with a deterministic init (the key is ignored)."""
    eigs, center, w0 = (jnp.asarray(a) for a in (eigs, center, w0))

    def loss(w, batch, hparams=None):
        return 0.5 * jnp.sum(eigs * (w - center) ** 2)

    return Task(init=lambda key: w0, loss=loss, batch=lambda key, split: {}, name="quad")


def diag_family(eigs=EIGS) -> TaskFamily:
    """Random centre ``c ~ N(0, I)`` and init ``w0 ~ N(0, I)``: ``z0 ~ N(0, 2 I)``."""
    eigs = jnp.asarray(eigs)
    dim = eigs.shape[0]

    def sample(key):  # one random draw: keeps compile times small
        x = jax.random.normal(key, (2 * dim,))
        return {"c": x[:dim], "w0": x[dim:]}

    def task(cfg):
        def loss(w, batch, hparams=None):
            return 0.5 * jnp.sum(eigs * (w - cfg["c"]) ** 2)

        return Task(init=lambda key: cfg["w0"], loss=loss, batch=lambda key, split: {},
                    name="diag_quad")

    return TaskFamily(sample=sample, task=task, name="diag_quad")


def problem(task_or_family, length: int, meta_loss: str = "valid"):
    return inner_problem(task_or_family, sgd_lr, schedule=truncation.constant(length),
                         valid=meta_loss != "train")


def step_losses(log_lrs, eigs=EIGS, z0=None):
    """Per-step ``(train, valid)`` losses ``[T]`` of one episode with per-step ``log_lrs`` [T].

    train_t = L(w_t) (before update t), valid_t = L(w_{t+1}) (after it).
    """
    z = jnp.asarray(W0 - CENTER if z0 is None else z0, log_lrs.dtype)
    eigs = jnp.asarray(eigs, log_lrs.dtype)

    def body(z, log_lr):
        z_next = (1.0 - jnp.exp(log_lr) * eigs) * z
        return z_next, (0.5 * jnp.sum(eigs * z * z), 0.5 * jnp.sum(eigs * z_next * z_next))

    _, (train, valid) = jax.lax.scan(body, z, log_lrs)
    return train, valid


def truncation_losses(log_lrs, meta_loss: str, trunc: int, episode: int, **kw):
    """Per-truncation meta-losses ``[T / trunc]`` of ``T = len(log_lrs)`` steps run with
    per-step learning rates ``exp(log_lrs)``, episodes of ``episode`` steps restarting from
    the init, truncations of ``trunc`` steps; ``meta_loss`` as in ``metaopt.estimators``."""
    total = log_lrs.shape[0]
    parts = []
    for start in range(0, total, episode):
        train, valid = step_losses(log_lrs[start:start + episode], **kw)
        if meta_loss == "log_train":  # the documented floor of 1e-6
            parts.append(jnp.log(jnp.maximum(train, 1e-6)))
        else:
            parts.append(train if meta_loss == "train" else valid)
    per_step = jnp.concatenate(parts)[:total].reshape(total // trunc, trunc)
    return per_step[:, -1] if meta_loss == "last" else jnp.mean(per_step, axis=1)


def objective(log_lrs, meta_loss: str, trunc: int, episode: int, **kw):
    """The sum of :func:`truncation_losses`."""
    return jnp.sum(truncation_losses(log_lrs, meta_loss, trunc, episode, **kw))


def expected_meta_loss(log_lr, horizon: int, eigs=EIGS, z0_sq=2.0):
    """Mean validation loss over ``horizon`` steps of SGD at ``exp(log_lr)``, in expectation
    over tasks with ``E z0^2 = z0_sq`` per coordinate (2 for :func:`diag_family`, and exactly
    the loss of :func:`fixed_task` with ``z0_sq=1``, its ``z0 = -1``)."""
    eta = np.exp(log_lr)
    t = np.arange(1, horizon + 1)[:, None]
    return 0.5 * z0_sq * np.mean(np.sum(eigs * (1.0 - eta * eigs) ** (2 * t), axis=1))


def optimal_log_lr(horizon: int) -> float:
    """The minimizer of :func:`expected_meta_loss` (the same for both task sets), on a grid."""
    grid = np.linspace(np.log(0.01), np.log(1.9), 20001)
    return float(grid[np.argmin([expected_meta_loss(g, horizon) for g in grid])])


def key_bit_family(bad_scale=float("inf")) -> TaskFamily:
    """:func:`fixed_task` or, for about half of the keys, its eigenvalues times ``bad_scale``.

    The choice is a bit of the key's data rather than a random draw: random sampling inside
    the reset path costs seconds of XLA compile time on the test machine.
    """
    eigs = jnp.asarray(EIGS, jnp.float32)

    def sample(key):
        bit = jax.random.key_data(key).reshape(-1)[-1] % 2
        return {"scale": jnp.where(bit == 1, jnp.float32(bad_scale), jnp.float32(1.0))}

    def task(cfg):
        def loss(w, batch, hparams=None):
            return 0.5 * jnp.sum(cfg["scale"] * eigs * (w - 1.0) ** 2)

        return Task(init=lambda key: jnp.zeros(5, jnp.float32), loss=loss,
                    batch=lambda key, split: {}, name="key_bit_quad")

    return TaskFamily(sample=sample, task=task, name="key_bit_quad")
