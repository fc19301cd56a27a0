"""Meta-gradient of a black-box query policy: exact backprop through its queries.

For ``B`` functions ``f_i`` freshly sampled from a task family (deterministic tasks: ``init(key)``
gives the first query ``x_1``, ``loss(x, batch)`` is ``f``, e.g. :func:`tasks.gp_functions`), the
estimate is

    g = (1/B) sum_i d/dtheta L(y_i(theta)),     y_i = rollout(policy, theta, f_i, x_{1,i}, T),

with ``L`` the ``"sum"`` or ``"oi"`` loss of :mod:`.rollout` (Chen et al. 2017 train the same
way: the training functions are differentiable, so the gradient flows through every
``f(x_t)`` back into the queries and the RNN). It is an :class:`metaopt.estimators.Estimator`,
so :func:`metaopt.outer_trainer` (outer optax optimizer, clipping, non-finite skipping) trains
the policy. One reverse pass with the shared ``theta`` (plain matrix products; per-task
gradients would turn every LSTM product into a batched one, several times slower on CPU): a
function whose loss is non-finite is left out of the mean (``where`` on the losses; a
non-finite *gradient* is then skipped by the outer step as a whole).

Metrics: ``meta_loss`` (mean loss), ``best`` (mean best value after ``T`` queries),
``inner_steps`` (``B T`` function evaluations), ``vjps`` (``B T``), ``masked_tasks``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt.blackbox.policy import QueryPolicy
from metaopt.blackbox.rollout import LOSSES, meta_loss, rollout
from metaopt.estimators.base import Estimator, NoState
from metaopt.tasks.base import TaskFamily, as_family


def blackbox_backprop(policy: QueryPolicy, family: TaskFamily, *, horizon: int, num_tasks: int,
                      loss: str = "oi") -> Estimator:
    """The estimator of the module docstring (``horizon`` = T queries, ``num_tasks`` = B)."""
    if not isinstance(policy, QueryPolicy):
        raise TypeError(f"policy: expected a QueryPolicy, got {type(policy).__name__}")
    family = as_family(family)
    for name, v in (("horizon", horizon), ("num_tasks", num_tasks)):
        if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "horizon" else 1):
            raise ValueError(f"{name}: must be an integer >= {2 if name == 'horizon' else 1}, "
                             f"got {v!r}")
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown value {loss!r}; allowed values are {list(LOSSES)}")

    def one(theta, key):
        k_cfg, k_x = jax.random.split(key)
        task = family.task(family.sample(k_cfg))
        _, ys = rollout(policy, theta, lambda x: task.loss(x, {}), task.init(k_x), horizon)
        return meta_loss(ys, loss), jnp.min(ys)

    def estimate(key, theta, state):
        keys = jax.random.split(key, num_tasks)

        def total(th):
            losses, best = jax.vmap(one, in_axes=(None, 0))(th, keys)
            ok = jnp.isfinite(losses)
            kept = jnp.maximum(jnp.sum(ok), 1)
            return jnp.sum(jnp.where(ok, losses, 0.0)) / kept, (ok, kept, best)

        (mean_loss, (ok, kept, best)), grad = jax.value_and_grad(total, has_aux=True)(theta)
        metrics = {"meta_loss": mean_loss,
                   "best": jnp.sum(jnp.where(ok, best, 0.0)) / kept,
                   "inner_steps": jnp.asarray(num_tasks * horizon, jnp.float32),
                   "vjps": jnp.asarray(num_tasks * horizon, jnp.float32),
                   "masked_tasks": jnp.sum(~ok).astype(jnp.float32)}
        return grad, state, metrics

    return Estimator(init=lambda key, theta: NoState(), estimate=estimate,
                     name=f"blackbox_backprop_{loss}")
