"""Truncated backprop through time (TBPTT), the inner state carried across truncations.

The estimator keeps ``B`` inner tasks ``s_i`` (staggered so that they do not reset in
lockstep). Each call unrolls ``T`` steps from them and differentiates only through that
truncation, treating the incoming state as a constant:

    g = (1/B') sum_{i ok} d/dtheta [ sum_t w_t v_t(theta; stop_gradient(s_i)) ],

then carries the new states to the next call. Cheap and low-variance, with memory
O(T * state) independent of the episode horizon, but *biased*: the influence of ``theta`` on
the state through earlier truncations is dropped, which favours short-horizon behaviour
(Wu et al. 2018, "short-horizon bias"). Episodes that end inside a truncation reset there
(``InnerProblem``), and the gradient flows into the fresh task's init through ``theta``.

Per-task gradients (one reverse pass with ``theta`` broadcast to ``[B, ...]``) let a task that
hit a non-finite loss in this truncation, or produced a non-finite gradient, be dropped
(counted in ``masked_tasks``) rather than poison the mean.

Cost per call: ``B T`` inner steps and ``B T`` step VJPs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.estimators.backprop import chunked_unroll, per_task_grad
from metaopt.inner import InnerProblem, InnerState


class TBPTTState(NamedTuple):
    """The carried inner states, ``[B, ...]``."""

    inner: InnerState


def truncated_backprop(
    problem: InnerProblem,
    *,
    num_tasks: int,
    unroll_length: int,
    meta_loss: str = "valid",
    stagger: str = "even",
    axis_name: str | None = None,
) -> base.Estimator:
    """TBPTT over truncations of ``unroll_length`` steps on ``num_tasks`` persistent tasks.

    Args:
      problem: the inner problem.
      num_tasks: tasks ``B`` carried by the state.
      unroll_length: steps ``T`` per truncation (per ``estimate`` call).
      meta_loss: ``"train"``, ``"valid"`` or ``"last"`` (see :mod:`metaopt.estimators.base`).
      stagger: first-episode offsets of the tasks, one of ``metaopt.inner.truncation.STAGGERS``.
      axis_name: the mapped device axis the task batch is split over, or ``None``
        (data parallelism: see :mod:`metaopt.estimators.base`).
    """
    problem = base.check_problem(problem)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    unroll_length = base.check_positive_int("unroll_length", unroll_length)
    meta_loss = base.check_meta_loss(meta_loss, problem)
    stagger = base.check_stagger(stagger)
    axis_name = base.check_axis_name(axis_name)
    weights = base.step_weights(meta_loss, unroll_length)

    def init(key, theta):
        draw = lambda k, n: problem.init_batch(k, theta, n, stagger)
        return TBPTTState(base.per_task(draw, key, num_tasks, axis_name))

    def estimate(key, theta, state):
        keys = base.split_keys(key, num_tasks, axis_name)
        start = jax.lax.stop_gradient(state.inner)  # truncation boundary: no gradient into s

        def losses(thetas):
            new, out = chunked_unroll(problem, keys, thetas, start, unroll_length, None,
                                      last_only=meta_loss == "last")
            values = base.step_values(out, meta_loss)
            finite = base.finite_steps(out, values)
            return base.weighted(values, weights, finite), (new, values, finite)

        grads, (new, values, finite) = per_task_grad(losses, theta, num_tasks)
        ok = jnp.all(finite, axis=1) & base.all_finite_per_task(grads)
        grad = base.masked_task_mean(grads, ok, axis_name)
        metrics = {
            "meta_loss": base.mean_meta_loss(values, weights, finite),
            "nonfinite_steps": jnp.sum(~finite).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, unroll_length, vjps=num_tasks * unroll_length),
        }
        return grad, TBPTTState(new), metrics

    return base.Estimator(init=init, estimate=estimate, name="tbptt")
