"""The digits-MLP parts of the short-horizon-bias experiment: the analogue of the paper's
MNIST 784-100-100-10 MLP, trained by SGD with momentum 0.9 and the schedule
``a_k = a_0 (1 + k/K)^(-beta)`` (``learnable_momentum(schedule="inverse_power")`` with the
momentum held at 0.9). The meta-objective is the *training* loss (the paper's), measured on a
fresh training minibatch after the last step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt.inner import inner_problem, truncation
from metaopt.lopt.base import logit
from metaopt.lopt.hparam import learnable_momentum
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.digits import mlp_classifier

from . import nqm_part

LOPT = learnable_momentum(learning_rate=0.1, momentum=nqm_part.MOMENTUM,
                          schedule=nqm_part.SCHEDULE)


def optimizer_fn(theta: dict):
    """The optax transform of schedule-theta ``{log_lr, log_K, beta}``; momentum fixed."""
    full = {**theta, "logit_momentum": jnp.asarray(logit(nqm_part.MOMENTUM), jnp.float32)}
    return LOPT.optimizer(full)


def train_objective(task):
    """``task`` whose validation batches are training batches: the meta-loss is the training
    loss on a fresh minibatch (Wu et al. tune the schedule for the training loss)."""
    return task._replace(batch=lambda key, split: task.batch(key, "train"))


def make_task(hidden, batch_size: int):
    data = load_digits()
    task = mlp_classifier(data, hidden=hidden, batch_size=batch_size)
    x, y = data.to_device().splits["train"]
    full = {"x": x.astype(jnp.float32), "y": y, "idx": jnp.arange(x.shape[0]),
            "train": jnp.asarray(False)}
    return train_objective(task), lambda params: task.metrics(params, full)["loss"]


def problem(task, horizon: int):
    return inner_problem(task, optimizer_fn, schedule=truncation.constant(horizon), valid=True)


def retrainer(task, full_loss, horizon: int, seeds: int, compiler_options=None):
    """``theta -> [seeds]``: the full-training-set loss after ``horizon`` steps under theta's
    schedule, one fresh run per seed (seeds 1000, 1001, ...; run one after another)."""
    prob = problem(task, horizon + 1)  # no reset inside the run
    keys = jnp.stack([jax.random.key(1000 + s) for s in range(seeds)])

    def one(theta, key):
        k_init, k_run = jax.random.split(key)
        state = prob.init(k_init, theta)
        state, _ = prob.unroll(k_run, theta, state, horizon)
        loss = full_loss(state.params)
        return jnp.where(jnp.isfinite(loss), loss, jnp.inf)

    return jax.jit(lambda theta: jax.lax.map(lambda k: one(theta, k), keys),
                   compiler_options=compiler_options)
