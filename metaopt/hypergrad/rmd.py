"""RMD: exact reverse-mode differentiation through the unroll (Maclaurin et al. 2015;
Franceschi et al. 2017).

    d^RMD = grad_alpha L_val(w_T) + sum_{t=1}^T grad_w L_val(w_T) A_T ... A_{t+1} B_t,

the exact hypergradient of ``L_val(w_T(alpha), alpha)`` with ``w_0`` held fixed, by
``jax.grad`` through the ``lax.scan`` of ``Phi``. Memory O(T |w|) for the stored trajectory
(``remat=True`` recomputes each step's internals in the backward pass, keeping only the
iterates). Cost: ``T`` VJPs of ``Phi``.

On a :func:`~metaopt.hypergrad.task_bilevel` with the same key this equals
:func:`metaopt.estimators.full_backprop` with ``meta_loss="last"`` on the corresponding
:func:`~metaopt.inner.inner_problem` (tested), which is the library's full-unroll estimator;
this version runs on any :class:`~metaopt.hypergrad.Bilevel` (toys, the ``context`` hook) and,
online, is truncated backprop of the final loss over the segment.
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine
from metaopt.hypergrad.bilevel import Bilevel


def rmd_segment(remat: bool):
    """The segment function of exact reverse mode (optionally rematerialized per step)."""

    def segment(bilevel: Bilevel, ctx, cfg, w, acc, keys: jax.Array) -> engine.Segment:
        batch = bilevel.batch(keys[-1], cfg)

        def objective(c):
            def body(w, key):
                return bilevel.phi(w, c, bilevel.batch(key, cfg)), None

            step = jax.checkpoint(body) if remat else body
            w_n = jax.lax.scan(step, jax.lax.stop_gradient(w), keys)[0]
            return bilevel.val_loss(w_n, c, batch), w_n

        (loss, w_n), grad = jax.value_and_grad(objective, has_aux=True)(ctx)
        return engine.Segment(grad, w_n, acc, loss)

    return segment


def rmd(
    bilevel: Bilevel,
    *,
    num_tasks: int = 1,
    unroll_length: int | None = None,
    remat: bool = False,
) -> Estimator:
    """Exact reverse mode over full episodes (``unroll_length=None``) or truncations.

    Args:
      bilevel: the problem (:class:`~metaopt.hypergrad.Bilevel`).
      num_tasks: episodes averaged per estimate.
      unroll_length: ``None``: exact over fresh episodes; ``n``: truncated backprop of the
        loss at the end of each ``n``-step segment of carried episodes (biased).
      remat: ``jax.checkpoint`` each step (less memory, a second forward pass).
    """
    if not isinstance(remat, bool):
        raise ValueError(f"remat: must be True or False, got {remat!r}")
    return engine.build(bilevel, rmd_segment(remat), num_tasks=num_tasks,
                        unroll_length=unroll_length, vjps=lambda n: n, name="rmd")
