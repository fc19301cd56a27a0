"""IFT: the implicit-function hypergradient with a K-term Neumann series (Lorraine et al. 2020).

At a fixed point ``w* = Phi(w*, alpha)`` the implicit function theorem gives
``dw*/dalpha = (I - A)^{-1} B`` with ``A = dPhi/dw``, ``B = dPhi/dalpha`` at ``(w*, alpha)``, and

    d^IFT = grad_alpha L_val(w_T) + grad_w L_val(w_T) (sum_{j=0}^{K} A^j) B,

evaluated at the final iterate ``w_T`` on the last step's batch. For SGD,
``Phi = w - eta grad_w L_train``, so ``A = I - eta H`` and ``B = -eta d^2 L_train / dw dalpha``:
this is Lorraine et al.'s ``-grad_w L_val [eta sum_j (I - eta H)^j] d^2 L_train / dw dalpha``
(the seed's formula), and it converges to the exact ``-grad L_val H^{-1} d^2 L_train/dw dalpha``
as ``K -> inf`` when ``w_T`` is a minimum and ``eta ||H|| < 2``. Written with ``Phi``'s
Jacobians it also covers momentum and other optimizers (``w`` includes their state).

Each of the ``K + 1`` VJPs of ``Phi`` with respect to ``(w, alpha)`` at once gives
``(v_j A, v_j B)`` for ``v_j = v_0 A^j``, ``v_0 = grad_w L_val(w_T)``; the ``v_j B`` are summed.
Cost: ``K + 1`` VJPs (the last one's ``w`` part unused), memory independent of ``T`` and ``K``.
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine
from metaopt.hypergrad.bilevel import iterate_floats


def ift_work(num_terms: int):
    """The last step, then ``K + 1`` VJPs of ``Phi`` at ``w_n`` on that step's batch."""

    def make(problem):
        def work(key, ctx, state, acc):
            new, out = problem.phi(key, ctx, state)
            _, v0, gc = engine.val_grads(problem, key, ctx, new)
            fed = problem.feed_valid_loss
            floats, rebuild = iterate_floats(new, fed)
            _, vjp = jax.vjp(
                lambda f, c: iterate_floats(problem.phi(key, c, rebuild(f))[0], fed)[0],
                floats, ctx)

            def body(carry, _):
                v, total = carry
                v_a, v_b = vjp(v)
                return (v_a, engine.tree_add(total, v_b)), None

            (_, total), _ = jax.lax.scan(body, (v0, gc), None, length=num_terms + 1)
            return new, out, acc, total

        return work

    return make


def ift(
    problem,
    *,
    num_terms: int = 10,
    num_tasks: int = 1,
    unroll_length: int | None = None,
    horizon: int | None = None,
    stagger: str = "even",
    axis_name: str | None = None,
) -> Estimator:
    """The IFT/Neumann estimator at the segment's last iterate.

    Args:
      problem: an :class:`~metaopt.inner.InnerProblem` or a :class:`~metaopt.hypergrad.Bilevel`.
      num_terms: ``K``, the Neumann powers ``A^1 .. A^K`` beyond the identity.
      num_tasks: tasks averaged per estimate.
      unroll_length: ``None`` for full episodes, ``n`` for online truncations (IFT at the
        current iterate after each ``n`` steps).
      horizon: steps of a full episode (default: the problem's schedule ``max_length``).
      stagger: first-episode offsets of the online tasks.
      axis_name: the mapped device axis the task batch is split over, or ``None``.
    """
    if isinstance(num_terms, bool) or not isinstance(num_terms, int) or num_terms < 0:
        raise ValueError(f"num_terms: must be an integer >= 0, got {num_terms!r}")
    return engine.build(problem, ift_work(num_terms), last_only=True, num_tasks=num_tasks,
                        unroll_length=unroll_length, horizon=horizon, stagger=stagger,
                        axis_name=axis_name, vjps=lambda n: num_terms + 1,
                        name=f"ift_{num_terms}")
