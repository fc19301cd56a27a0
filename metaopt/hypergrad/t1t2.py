"""T1-T2 (Luketina et al. 2016): the direct term plus the last step's response.

    d^{T1-T2} = grad_alpha L_val(w_T) + grad_w L_val(w_T) B_T,   B_T = dPhi(w_{T-1}, alpha)/dalpha

It is greedy with ``gamma -> 0`` (the seed's first theorem): only the last step's influence of
``alpha`` on ``w_T`` is kept. Online by nature; short-horizon biased. Cost: one VJP of ``Phi``.
"""

from __future__ import annotations

import jax

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine
from metaopt.hypergrad.bilevel import Bilevel


def t1t2_segment(bilevel: Bilevel, ctx, cfg, w, acc, keys: jax.Array) -> engine.Segment:
    """``n - 1`` plain steps, then the last one with its VJP ``v B_n``, ``v = grad L_val(w_n)``."""
    w = engine.unroll(bilevel, ctx, cfg, w, keys[:-1])
    batch = bilevel.batch(keys[-1], cfg)
    w, vjp = engine.phi_vjp(bilevel, w, ctx, batch)
    loss, gw, gc = engine.val_grads(bilevel, w, ctx, batch)
    return engine.Segment(engine.tree_add(gc, vjp(gw)), w, acc, loss)


def t1t2(bilevel: Bilevel, *, num_tasks: int = 1, unroll_length: int | None = None) -> Estimator:
    """The T1-T2 estimator over full episodes or online truncations (arguments as :func:`fo`)."""
    return engine.build(bilevel, t1t2_segment, num_tasks=num_tasks,
                        unroll_length=unroll_length, vjps=lambda n: 1, name="t1t2")
