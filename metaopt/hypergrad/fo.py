"""FO: the first-order hypergradient, the direct term only.

    d^FO = grad_alpha L_val(w_T, alpha)

(the seed's baseline; the "first-order" approximation of MAML-style meta-learning). It ignores
how ``alpha`` moved ``w_T``, so it is zero when ``alpha`` enters only the inner optimizer or the
training loss (learning rates, per-example weights: the validation objective does not see the
metaparameters, :mod:`metaopt.inner.problem`). Cost: no VJP through ``Phi``.
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine


def fo_work(problem):
    """The last step, then ``grad_ctx L_val(w_n)``."""

    def work(key, ctx, state, acc):
        new, out = problem.phi(key, ctx, state)
        return new, out, acc, jax.grad(lambda c: problem.val_loss(key, c, new))(ctx)

    return work


def fo(problem, *, num_tasks: int = 1, unroll_length: int | None = None,
       horizon: int | None = None, stagger: str = "even",
       axis_name: str | None = None) -> Estimator:
    """The FO estimator over full episodes (``unroll_length=None``) or online truncations.

    Args:
      problem: an :class:`~metaopt.inner.InnerProblem` or a :class:`~metaopt.hypergrad.Bilevel`.
      num_tasks: tasks averaged per estimate.
      unroll_length: ``None``: fresh episodes of ``horizon`` steps each call; ``n``: online,
        the next ``n`` steps of carried tasks per call (see :mod:`metaopt.hypergrad.engine`).
      horizon: steps of a full episode (default: the problem's schedule ``max_length``).
      stagger: first-episode offsets of the online tasks.
      axis_name: the mapped device axis the task batch is split over, or ``None``.
    """
    return engine.build(problem, fo_work, last_only=True, num_tasks=num_tasks,
                        unroll_length=unroll_length, horizon=horizon, stagger=stagger,
                        axis_name=axis_name, vjps=lambda n: 0, name="fo")
