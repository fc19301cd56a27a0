"""Greedy hypergradient (Yakovlev & Bakhteev 2024, "generalized greedy gradient-based
hyperparameter optimization"), accumulated online.

    d^greedy(gamma) = grad_alpha L_val(w_T, alpha)
                      + sum_{t=1}^T gamma^(T-t) grad_w L_val(w_t, alpha) B_t,
    B_t = dPhi(w_{t-1}, alpha) / dalpha

(indices as in the seed: ``B_t`` is the Jacobian of the step that produces ``w_t``, and its
cotangent is the validation gradient *at that step's output* ``w_t``). The exact hypergradient
carries ``grad_w L_val(w_T) A_T ... A_{t+1}`` instead of ``gamma^(T-t) grad_w L_val(w_t)``:
greedy replaces the backward product of Jacobians by a discount and the final-iterate gradient
by the current one, so it can be accumulated forward in the scan carry,

    acc_t = gamma acc_{t-1} + grad_w L_val(w_t) B_t,    d = grad_alpha L_val(w_T) + acc_T,

with one VJP of ``Phi`` (with respect to ``alpha``, at ``w_{t-1}``) per step: memory
O(|w| + |alpha|), independent of ``T``; exact products by reverse-mode autodiff.

Properties (tested): ``gamma -> 0`` gives T1-T2; if ``A_t = I`` and ``grad_w L_val`` is the
same along the trajectory, ``gamma = 1`` gives the exact hypergradient; on quadratics with
``Phi = w - eta grad L_train`` and ``gamma = 1 - eta`` it is a descent direction (the seed's
second theorem). Online over truncations the accumulator and its discount continue across
calls (terms from earlier calls were computed under the ``alpha`` of their time) and restart
from zero when the task's episode ends (:mod:`metaopt.hypergrad.engine`).
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine


def greedy_work(gamma: float):
    """Every step: ``acc <- gamma acc + grad_w L_val(w_t) B_t`` (one VJP), estimate
    ``grad_ctx L_val(w_t) + acc``."""

    def make(problem):
        def work(key, ctx, state, acc):
            new, out, vjp = engine.phi_vjp(problem, key, ctx, state)
            _, gw, gc = engine.val_grads(problem, key, ctx, new)
            acc = jax.tree.map(lambda a, b: gamma * a + b, acc, vjp(gw))
            return new, out, acc, engine.tree_add(gc, acc)

        return work

    return make


def greedy(
    problem,
    *,
    gamma: float,
    num_tasks: int = 1,
    unroll_length: int | None = None,
    horizon: int | None = None,
    stagger: str = "even",
    axis_name: str | None = None,
) -> Estimator:
    """The greedy estimator with discount ``gamma`` in [0, 1].

    Args:
      problem: an :class:`~metaopt.inner.InnerProblem` or a :class:`~metaopt.hypergrad.Bilevel`.
      gamma: the discount; the seed uses 0.9-0.999, and ``1 - eta`` for SGD with rate ``eta``.
      num_tasks: tasks averaged per estimate.
      unroll_length: ``None``: fresh episodes of ``horizon`` steps each call; ``n``: online,
        the next ``n`` steps of carried tasks per call, their accumulators carried too.
      horizon: steps of a full episode (default: the problem's schedule ``max_length``).
      stagger: first-episode offsets of the online tasks.
      axis_name: the mapped device axis the task batch is split over, or ``None``.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma <= 1:
        raise ValueError(f"gamma: must be a number in [0, 1], got {gamma!r}")
    return engine.build(problem, greedy_work(float(gamma)), last_only=False,
                        num_tasks=num_tasks, unroll_length=unroll_length, horizon=horizon,
                        stagger=stagger, axis_name=axis_name, vjps=lambda n: n,
                        name=f"greedy_{gamma:g}", uses_acc=True)
