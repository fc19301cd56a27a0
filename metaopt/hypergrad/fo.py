"""FO: the first-order hypergradient, the direct term only.

    d^FO = grad_alpha L_val(w_T, alpha)

(the seed's baseline; the "first-order" approximation of MAML-style meta-learning). It ignores
how ``alpha`` moved ``w_T``, so it is zero when ``alpha`` enters only the inner optimizer or the
training loss (learning rates, per-example weights). Cost: no VJP through ``Phi``.
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine
from metaopt.hypergrad.bilevel import Bilevel


def fo_segment(bilevel: Bilevel, ctx, cfg, w, acc, keys: jax.Array) -> engine.Segment:
    """Run ``len(keys)`` steps from ``w``; return ``grad_ctx L_val(w_n)``."""
    w = engine.unroll(bilevel, ctx, cfg, w, keys)
    loss, _, gc = engine.val_grads(bilevel, w, ctx, bilevel.batch(keys[-1], cfg))
    return engine.Segment(gc, w, acc, loss)


def fo(bilevel: Bilevel, *, num_tasks: int = 1, unroll_length: int | None = None) -> Estimator:
    """The FO estimator over full episodes (``unroll_length=None``) or online truncations.

    Args:
      bilevel: the problem (:class:`~metaopt.hypergrad.Bilevel`).
      num_tasks: episodes averaged per estimate.
      unroll_length: ``None``: fresh episodes of ``bilevel.horizon`` steps each call; ``n``:
        online, the next ``n`` steps of carried episodes per call (see
        :mod:`metaopt.hypergrad.engine`).
    """
    return engine.build(bilevel, fo_segment, num_tasks=num_tasks, unroll_length=unroll_length,
                        vjps=lambda n: 0, name="fo")
