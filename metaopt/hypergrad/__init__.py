"""Hypergradient estimators of seed 001 (Yakovlev & Bakhteev 2024) on the one inner engine.

    alpha* = argmin_alpha L_val(w_T(alpha), alpha),   w_{t+1} = Phi(w_t, alpha)

Every estimator here runs on an :class:`~metaopt.inner.InnerProblem` (``Phi`` is its reset-free
step), with the keys, staggering, resets, masking and device axis of every other estimator,
and is registered in :data:`metaopt.estimators.REGISTRY`:

* :func:`fo` (direct term), :func:`t1t2` (last step), :func:`greedy` (discounted sum of greedy
  terms, online, O(1) memory in T), :func:`ift` (Neumann series), :func:`rmd` (exact reverse
  mode: the backprop estimators with the last step's meta-loss), over full episodes or online
  truncations (:class:`HypergradState`);
* :class:`Bilevel` -- a problem written by its update map (:func:`as_problem` makes it an
  InnerProblem); :func:`shaban_toy` is the seed's quadratic toy; :func:`task_bilevel` is the
  map view of a task trained by an optax optimizer; :func:`maml` is MAML's Bilevel (the
  initialization is ``alpha``; ``first_order=True`` for FOMAML), differentiated by :func:`rmd`.
"""

from __future__ import annotations

from metaopt.hypergrad.bilevel import Bilevel, TaskIterate, as_problem, task_bilevel
from metaopt.hypergrad.engine import HypergradState
from metaopt.hypergrad.fo import fo
from metaopt.hypergrad.greedy import greedy
from metaopt.hypergrad.ift import ift
from metaopt.hypergrad.maml import maml, maml_adapt
from metaopt.hypergrad.rmd import rmd
from metaopt.hypergrad.t1t2 import t1t2
from metaopt.hypergrad.toy import shaban_exact, shaban_toy

NAMES = ("fo", "t1t2", "greedy", "ift", "rmd")


def make(name: str, problem, **options):
    """Build the hypergradient estimator ``name`` (one of :data:`NAMES`) for ``problem`` (an
    InnerProblem or a Bilevel) through :data:`metaopt.estimators.REGISTRY`."""
    from metaopt.estimators import REGISTRY
    from metaopt.spec import SpecError

    if name not in NAMES:
        raise SpecError("name", f"unknown hypergradient {name!r}; allowed values are "
                        f"{list(NAMES)}")
    return REGISTRY.make(name, problem, **options)


__all__ = [
    "NAMES",
    "Bilevel",
    "HypergradState",
    "TaskIterate",
    "as_problem",
    "fo",
    "greedy",
    "ift",
    "make",
    "maml",
    "maml_adapt",
    "rmd",
    "shaban_exact",
    "shaban_toy",
    "t1t2",
    "task_bilevel",
]
