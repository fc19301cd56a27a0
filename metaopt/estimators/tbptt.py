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

A task that hit a non-finite loss in this truncation, or produced a non-finite gradient, is
dropped (counted in ``masked_tasks``) rather than poison the mean. That needs per-task
gradients (one reverse pass with ``theta`` broadcast to ``[B, ...]``: every task then carries
its own copy of the learned optimizer's weights, and its matmuls run per task). With
``shared_theta=True`` the reverse pass is taken with respect to the one shared
``theta`` instead -- the learned optimizer runs one matmul for all tasks' rows, forward and
backward -- and only if some task was non-finite (the sum is then unusable) the per-task pass
runs as a fallback (a ``lax.cond``: compiled, but executed only then). Both give
``(1/B') sum_{i ok} g_i``.

Rematerialization (``remat``, memory O(T * state) in every case, independent of the horizon):

* ``"none"``: the scan stores every step's residuals (activations of the inner gradient and
  of the learned optimizer for all tasks, many MB per step) for the reverse pass;
* ``"step"``: each step is a ``jax.checkpoint`` saving nothing: only the carried inner states
  are stored and the step is recomputed before its VJP (one more forward pass, far less
  memory traffic);
* ``"step_dots"``: per step, matmul outputs are saved and the elementwise work recomputed
  (``jax.checkpoint_policies.dots_saveable``);
* ``"block"``: chunks of ``block`` steps, each a checkpointed scan (``chunked_unroll``; the
  chunks draw their keys per chunk).

Measured on the 2-core machine (issue 16, ``scripts/results/issue16.md``; ``bench.py
meta-train --meta-loss train --schedule log_uniform --devices 1``: 2 x 32 MLP optimizer on the
digits MLP, 16 tasks, ``T = 50``; runs alternating with the estimator of the issue's
commit): per task with per-step remat (the default) 897 task-steps/s, best of four runs
(764-897) against 602 (545-602) for the issue's estimator on its commit; full-rank PES 2,037.
Earlier, before the network's output-layer gradient became matrix-vector products
(:func:`metaopt.lopt.ppnet.narrow_matmul`): per-step remat 732, no remat 538, shared theta
with per-step remat 640. Remat wins although it computes every step twice: without it the
reverse pass reads back every step's stored activations (the network's ``[16 x 2,410, 32]``
hidden activations alone are 4.9 MB per layer and step); saving only those (a
``save_only_these_names`` policy) tied with per-step remat. Peak memory (``VmHWM`` of a
fresh process) flat from horizon 1,000 to 10,000 (only the truncation's states are kept):
1,294 / 1,270 MB with two task groups, 1,092 / 1,030 MB with one ``vmap``. The shared theta was
the fastest before the per-parameter network's forward pass compiled to one fused kernel,
which needs per-task weights.

Task groups (``task_groups``): each step maps the tasks in that many independent slices
(:func:`metaopt.inner.core.grouped_vmap`; the values are those of one ``vmap``, checked in
float64). XLA:CPU runs independent kernels at once, and most kernels of the reverse pass are
too small to use both cores of a small machine alone; two chains of half-size kernels fill
them. Measured in-process against one ``vmap`` (same configuration, medians of paired
rounds): +4% to +17% for the 2 x 32 MLP optimizer (four runs), +21% for the hierarchical
one, +11% for the learnable Adam, the LSTM within noise (+1%); with two CPU devices (8 tasks
each) +3%. Against the issue's commit, alternating processes, four rounds: 811/799/834/709
task-steps/s against 531/509/546/526 (1.53x best vs best and median paired; a second run
1.52x / 1.58x; 1.49x / 1.39x with one ``vmap``). The default (``None``) is two groups on the
CPU backend when the local batch is even and at least 4, one elsewhere (accelerators run one
large kernel better than two half-size ones; not measured here).

Cost per call: ``B T`` inner steps (``2 B T`` with remat, ``B (2 T - 1)`` for the ``"last"``
meta-loss, whose last step is not rematerialized) and ``B T`` step VJPs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.estimators import base
from metaopt.estimators.backprop import _sum_first, chunked_unroll, per_task_grad, step_policy
from metaopt.inner import InnerProblem, InnerState

REMATS = ("none", "step", "step_dots", "block")


class TBPTTState(NamedTuple):
    """The carried inner states, ``[B, ...]``."""

    inner: InnerState


def _remat_args(remat: str, block: int, unroll_length: int):
    """``(chunk, per-step policy)`` of a ``remat`` option (see the module docstring)."""
    if remat not in REMATS:
        raise ValueError(f"remat: unknown value {remat!r}; allowed values are {list(REMATS)}")
    if remat == "block":
        block = base.check_positive_int("block", block)
        if unroll_length % block:
            raise ValueError(f"block: must divide unroll_length={unroll_length}, got {block}")
        return block, None
    return None, step_policy(remat)


def truncated_backprop(
    problem: InnerProblem,
    *,
    num_tasks: int,
    unroll_length: int,
    meta_loss: str = "valid",
    stagger: str = "even",
    axis_name: str | None = None,
    remat: str = "step",
    block: int = 10,
    shared_theta: bool = False,
    task_groups: int | None = None,
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
      remat: rematerialization, one of :data:`REMATS` (module docstring); ``"step"``
        (default) was the fastest on the benchmark.
      block: steps per checkpointed chunk for ``remat="block"`` (must divide ``T``).
      shared_theta: reverse pass w.r.t. the shared theta, per-task only as a fallback
        (module docstring); ``False`` (default): always per task.
      task_groups: each step maps the tasks in that many independent slices
        (:func:`metaopt.inner.core.grouped_vmap`: same values, more kernels running at once);
        must divide ``num_tasks``. ``None`` (default): 2 on the CPU backend when the local
        batch is even and at least 4, else 1 (:func:`~.base.task_groups_for`).
    """
    problem = base.check_problem(problem)
    num_tasks = base.check_positive_int("num_tasks", num_tasks)
    unroll_length = base.check_positive_int("unroll_length", unroll_length)
    meta_loss = base.check_meta_loss(meta_loss, problem)
    stagger = base.check_stagger(stagger)
    axis_name = base.check_axis_name(axis_name)
    chunk, policy = _remat_args(remat, block, unroll_length)
    if not isinstance(shared_theta, bool):
        raise TypeError(f"shared_theta: expected True or False, got {shared_theta!r}")
    task_groups = base.check_task_groups(task_groups, num_tasks)
    weights = base.step_weights(meta_loss, unroll_length)
    last_only = meta_loss == "last" and chunk is None

    def init(key, theta):
        draw = lambda k, n: problem.init_batch(k, theta, n, stagger)
        return TBPTTState(base.per_task(draw, key, num_tasks, axis_name))

    def estimate(key, theta, state):
        keys = base.split_keys(key, num_tasks, axis_name)
        start = jax.lax.stop_gradient(state.inner)  # truncation boundary: no gradient into s
        groups = base.task_groups_for(task_groups, keys.shape[0])

        def losses(th, batched):
            new, out = chunked_unroll(problem, keys, th, start, unroll_length, chunk, None,
                                      last_only=last_only, theta_batched=batched, remat=policy,
                                      groups=groups)
            values = base.step_values(out, meta_loss)
            finite = base.finite_steps(out, values)
            return base.weighted(values, weights, finite), (new, values, finite)

        def per_task():  # local sum of the kept tasks' gradients, and which were kept
            grads, (_, _, finite) = per_task_grad(lambda th: losses(th, True), theta,
                                                  num_tasks)
            ok = jnp.all(finite, axis=1) & base.all_finite_per_task(grads)
            return _masked_sum(grads, ok), ok

        if shared_theta:
            g, (new, values, finite) = jax.grad(
                lambda th: _sum_first(losses(th, False)), has_aux=True)(theta)
            clean = jnp.all(finite) & _all_finite(g)
            total, ok = jax.lax.cond(clean, lambda: (g, jnp.ones((num_tasks,), bool)), per_task)
        else:
            grads, (new, values, finite) = per_task_grad(lambda th: losses(th, True), theta,
                                                         num_tasks)
            ok = jnp.all(finite, axis=1) & base.all_finite_per_task(grads)
            total = _masked_sum(grads, ok)
        count = jnp.sum(ok).astype(jnp.float32)
        if axis_name is not None:
            total, count = jax.lax.psum((total, count), axis_name)
        grad = jax.tree.map(lambda x: (x / jnp.maximum(count, 1.0)).astype(x.dtype), total)
        # inner steps run again in the reverse pass (the peeled last step of "last" is not)
        rerun = 0 if (chunk is None and policy is None) else unroll_length - int(last_only)
        metrics = {
            "meta_loss": base.mean_meta_loss(values, weights, finite),
            "nonfinite_steps": jnp.sum(~finite).astype(jnp.float32),
            "masked_tasks": jnp.sum(~ok).astype(jnp.float32),
            **base.cost_metrics(num_tasks, unroll_length + rerun,
                                vjps=num_tasks * unroll_length),
        }
        return grad, TBPTTState(new), metrics

    return base.Estimator(init=init, estimate=estimate, name="tbptt")


def _masked_sum(grads, ok):
    """``sum_i ok_i g_i`` over the leading task axis (NaN-safe)."""
    def total(g):
        keep = ok.reshape(ok.shape + (1,) * (g.ndim - 1))
        return jnp.sum(jnp.where(keep, g, 0.0), axis=0)

    return jax.tree.map(total, grads)


def _all_finite(tree) -> jax.Array:
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))
