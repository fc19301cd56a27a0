"""T1-T2 (Luketina et al. 2016): the direct term plus the last step's response.

    d^{T1-T2} = grad_alpha L_val(w_T) + grad_w L_val(w_T) B_T,   B_T = dPhi(w_{T-1}, alpha)/dalpha

It is greedy with ``gamma -> 0`` (the seed's first theorem): only the last step's influence of
``alpha`` on ``w_T`` is kept. Online by nature; short-horizon biased. Cost: one VJP of ``Phi``.
"""

from __future__ import annotations

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine


def t1t2_work(problem):
    """The last step with its VJP: ``grad_ctx L_val(w_n) + v B_n``, ``v = grad_w L_val(w_n)``."""

    def work(key, ctx, state, acc):
        new, out, vjp = engine.phi_vjp(problem, key, ctx, state)
        _, gw, gc = engine.val_grads(problem, key, ctx, new)
        return new, out, acc, engine.tree_add(gc, vjp(gw))

    return work


def t1t2(problem, *, num_tasks: int = 1, unroll_length: int | None = None,
         horizon: int | None = None, stagger: str = "even",
         axis_name: str | None = None) -> Estimator:
    """The T1-T2 estimator over full episodes or online truncations (arguments as
    :func:`~metaopt.hypergrad.fo`)."""
    return engine.build(problem, t1t2_work, last_only=True, num_tasks=num_tasks,
                        unroll_length=unroll_length, horizon=horizon, stagger=stagger,
                        axis_name=axis_name, vjps=lambda n: 1, name="t1t2")
