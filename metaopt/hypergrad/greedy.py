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
calls; terms from earlier calls were computed under the ``alpha`` of their time.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt.estimators.base import Estimator
from metaopt.hypergrad import engine
from metaopt.hypergrad.bilevel import Bilevel


def greedy_segment(gamma: float):
    """The segment function of greedy with discount ``gamma``."""

    def segment(bilevel: Bilevel, ctx, cfg, w, acc, keys: jax.Array) -> engine.Segment:
        def body(carry, key):
            w, acc, _, _ = carry
            batch = bilevel.batch(key, cfg)
            w, vjp = engine.phi_vjp(bilevel, w, ctx, batch)
            loss, gw, gc = engine.val_grads(bilevel, w, ctx, batch)
            acc = jax.tree.map(lambda a, b: gamma * a + b, acc, vjp(gw))
            return (w, acc, gc, loss), None

        zero = jax.tree.map(jnp.zeros_like, ctx)
        loss0 = jnp.zeros((), jnp.result_type(float))
        (w, acc, gc, loss), _ = jax.lax.scan(body, (w, acc, zero, loss0), keys)
        return engine.Segment(engine.tree_add(gc, acc), w, acc, loss)

    return segment


def greedy(
    bilevel: Bilevel,
    *,
    gamma: float,
    num_tasks: int = 1,
    unroll_length: int | None = None,
) -> Estimator:
    """The greedy estimator with discount ``gamma`` in [0, 1].

    Args:
      bilevel: the problem (:class:`~metaopt.hypergrad.Bilevel`).
      gamma: the discount; the seed uses 0.9-0.999, and ``1 - eta`` for SGD with rate ``eta``.
      num_tasks: episodes averaged per estimate.
      unroll_length: ``None``: fresh episodes of ``bilevel.horizon`` steps each call; ``n``:
        online, the next ``n`` steps of carried episodes per call, the accumulator carried too.
    """
    if isinstance(gamma, bool) or not isinstance(gamma, int | float) or not 0 <= gamma <= 1:
        raise ValueError(f"gamma: must be a number in [0, 1], got {gamma!r}")
    return engine.build(bilevel, greedy_segment(float(gamma)), num_tasks=num_tasks,
                        unroll_length=unroll_length, vjps=lambda n: n,
                        name=f"greedy_{gamma:g}", uses_acc=True)
