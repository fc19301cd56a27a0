"""RMD: exact reverse-mode differentiation through the unroll (Maclaurin et al. 2015;
Franceschi et al. 2017).

    d^RMD = grad_alpha L_val(w_T) + sum_{t=1}^T grad_w L_val(w_T) A_T ... A_{t+1} B_t,

the exact hypergradient of ``L_val(w_T(alpha), alpha)`` by ``jax.grad`` through the
``lax.scan`` of the inner steps. It *is* the library's backprop estimator on the last step's
meta-loss: :func:`metaopt.estimators.full_backprop` (``meta_loss="last"``) over full episodes,
:func:`metaopt.estimators.truncated_backprop` (``meta_loss="last"``, biased) online. Memory
O(T |w|) for the stored trajectory (``remat=True`` rematerializes each step in the backward
pass, full episodes only). Cost: ``T`` VJPs of ``Phi``. Unlike the other hypergradients it
also differentiates a fresh episode's initialization where it depends on ``alpha``.
"""

from __future__ import annotations

from metaopt.estimators import backprop, base, tbptt
from metaopt.hypergrad.bilevel import as_problem


def rmd(
    problem,
    *,
    num_tasks: int = 1,
    unroll_length: int | None = None,
    horizon: int | None = None,
    remat: bool = False,
    stagger: str = "even",
    axis_name: str | None = None,
) -> base.Estimator:
    """Exact reverse mode over full episodes (``unroll_length=None``) or truncations.

    Args:
      problem: an :class:`~metaopt.inner.InnerProblem` or a :class:`~metaopt.hypergrad.Bilevel`.
      num_tasks: tasks averaged per estimate.
      unroll_length: ``None``: exact over fresh episodes of ``horizon`` steps; ``n``:
        truncated backprop of the loss at the end of each ``n``-step segment of carried tasks.
      horizon: steps of a full episode (default: the problem's schedule ``max_length``).
      remat: ``jax.checkpoint`` each step (less memory, a second forward pass, the same
        values: ``full_backprop(remat="step")``).
      stagger: first-episode offsets of the online tasks.
      axis_name: the mapped device axis the task batch is split over, or ``None``.
    """
    if not isinstance(remat, bool):
        raise ValueError(f"remat: must be True or False, got {remat!r}")
    problem = as_problem(problem)
    if unroll_length is None:
        est = backprop.full_backprop(problem, num_tasks=num_tasks, horizon=horizon,
                                     meta_loss="last", remat="step" if remat else "none",
                                     axis_name=axis_name)
    else:
        if remat:
            raise ValueError("remat: applies to full episodes (unroll_length=None)")
        if horizon is not None:
            raise ValueError("horizon: applies to full episodes (unroll_length=None); online, "
                             "the episodes' lengths come from the problem's schedule")
        est = tbptt.truncated_backprop(problem, num_tasks=num_tasks, unroll_length=unroll_length,
                                       meta_loss="last", stagger=stagger, axis_name=axis_name,
                                       remat="none")
    return est._replace(name="rmd")
