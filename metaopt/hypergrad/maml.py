"""MAML as a :class:`~metaopt.hypergrad.Bilevel` (Finn, Abbeel & Levine 2017).

The metaparameter ``alpha`` is the network's initialization; an episode (a task ``T_i``)
adapts it by ``T`` steps of gradient descent on the support set and is scored on the query
set:

    w_0 = alpha,   w_{t+1} = Phi(w_t) = w_t - lr * g(w_t),   g(w) = grad_w L_support(w),
    L_val(w_T) = L_query(w_T),   meta-gradient  d L_query(w_T) / d alpha.

With ``A_t = I - lr H_support(w_{t-1})`` the exact meta-gradient is
``grad L_query(w_T) A_T ... A_1``: second-order MAML. It is what the library's exact estimator
:func:`~metaopt.hypergrad.rmd` (= :func:`metaopt.estimators.full_backprop` of the last
step's loss, which also differentiates the episode's ``w_0 = alpha``) computes on this
Bilevel: backprop through the ``lax.scan`` of the inner steps, Hessian-vector products
included.

``first_order=True`` is first-order MAML: the inner gradient is a constant of the
differentiation (``stop_gradient(g(w_t))``), so ``A_t = I`` and the same estimator returns
``grad L_query(w_T)`` evaluated at the adapted weights (the paper's FOMAML, "~33% faster,
about equal accuracy"). The stop-gradient acts on any loss and any number of inner steps; the
reverse pass no longer differentiates through the support gradients (no Hessian-vector
products), which is where the speed-up comes from.

``loss(params, x, y) -> scalar`` is any differentiable loss of any parameter pytree; the
episode sampler ``sample(key) -> {"xs", "ys", "xq", "yq"}`` draws the support and query sets
(e.g. :func:`metaopt.tasks.fewshot.sample_episode`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from metaopt.hypergrad.bilevel import Bilevel, check_horizon

PyTree = Any
EPISODE_KEYS = ("xs", "ys", "xq", "yq")


def sgd_adapt(loss: Callable[..., jax.Array], lr: float, first_order: bool = False):
    """``phi(w, x, y) = w - lr * g``, ``g = grad_w loss(w, x, y)`` (``stop_gradient(g)`` with
    ``first_order``): one inner step of MAML."""

    def phi(w, x, y):
        g = jax.grad(loss)(w, x, y)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return jax.tree.map(lambda p, gi: p - lr * gi, w, g)

    return phi


def maml(
    sample: Callable[[jax.Array], dict],
    loss: Callable[[PyTree, jax.Array, jax.Array], jax.Array],
    *,
    inner_lr: float,
    steps: int,
    first_order: bool = False,
    name: str = "maml",
) -> Bilevel:
    """The MAML Bilevel (module docstring); meta-gradient: ``hg.rmd(maml(...), num_tasks=B)``.

    Args:
      sample: ``key -> episode`` with arrays ``xs, ys`` (support) and ``xq, yq`` (query).
      loss: ``loss(params, x, y) -> scalar``, the adaptation and the query objective.
      inner_lr: the inner step size (the paper's ``alpha``), a positive float.
      steps: inner gradient steps ``T`` (the Bilevel's ``horizon``).
      first_order: drop the second-order terms (FOMAML).
      name: the problem's name.

    Returns:
      A :class:`Bilevel` with ``init(key, alpha) = (sample(key), alpha)``, ``phi`` the inner
      SGD step on ``(xs, ys)`` and ``val_loss`` the loss on ``(xq, yq)``.
    """
    for field, fn in (("sample", sample), ("loss", loss)):
        if not callable(fn):
            raise TypeError(f"{field}: expected a function, got {type(fn).__name__}")
    if isinstance(inner_lr, bool) or not isinstance(inner_lr, int | float) or not inner_lr > 0:
        raise ValueError(f"inner_lr: must be a positive number, got {inner_lr!r}")
    if not isinstance(first_order, bool):
        raise ValueError(f"first_order: must be True or False, got {first_order!r}")
    steps = check_horizon(steps)
    step = sgd_adapt(loss, float(inner_lr), first_order)

    def init(key, alpha):
        episode = sample(key)
        missing = [k for k in EPISODE_KEYS if k not in episode]
        if missing:
            raise ValueError(f"sample: the episode lacks {missing}; it must give {EPISODE_KEYS}")
        return episode, alpha

    def batch(key, cfg):
        del key  # full-batch adaptation on the episode's support set
        return cfg

    def phi(w, ctx, b):
        del ctx  # alpha enters through w_0 only
        return step(w, b["xs"], b["ys"])

    def val_loss(w, ctx, b):
        del ctx
        return loss(w, b["xq"], b["yq"])

    suffix = "_first_order" if first_order else ""
    return Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=steps,
                   name=f"{name}{suffix}")


def maml_adapt(bilevel: Bilevel, alpha: PyTree, episode: dict, steps: int | None = None) -> PyTree:
    """``w_T``: ``steps`` (default: the horizon) inner steps of ``bilevel`` from ``alpha`` on
    ``episode`` (meta-test time adaptation; may differ from the meta-training ``T``)."""
    n = bilevel.horizon if steps is None else steps
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"steps: must be a non-negative integer, got {n!r}")
    return jax.lax.fori_loop(0, n, lambda _, w: bilevel.phi(w, alpha, episode), alpha)
