"""Hypergradient estimators of seed 001 (Yakovlev & Bakhteev 2024) on a bilevel problem.

    alpha* = argmin_alpha L_val(w_T(alpha), alpha),   w_{t+1} = Phi(w_t, alpha)

* :class:`Bilevel` -- the problem (``init``, ``batch``, ``phi``, ``val_loss``, ``context``);
  :func:`task_bilevel` builds one from a task and an optax optimizer like
  :func:`metaopt.inner.inner_problem`; :func:`shaban_toy` is the seed's quadratic toy;
* :func:`fo` (direct term), :func:`t1t2` (last step), :func:`greedy` (discounted sum of greedy
  terms, online, O(1) memory in T), :func:`ift` (Neumann series), :func:`rmd` (exact reverse
  mode), each an :class:`metaopt.estimators.Estimator` over full episodes or online
  truncations (:class:`HypergradState`).

:data:`HYPERGRADS` maps names to these factories; :func:`make` builds one by name.
"""

from __future__ import annotations

from metaopt.estimators.base import Estimator
from metaopt.hypergrad.bilevel import Bilevel, TaskIterate, task_bilevel
from metaopt.hypergrad.engine import HypergradState
from metaopt.hypergrad.fo import fo
from metaopt.hypergrad.greedy import greedy
from metaopt.hypergrad.ift import ift
from metaopt.hypergrad.rmd import rmd
from metaopt.hypergrad.t1t2 import t1t2
from metaopt.hypergrad.toy import shaban_exact, shaban_toy

HYPERGRADS = {"fo": fo, "t1t2": t1t2, "greedy": greedy, "ift": ift, "rmd": rmd}


def make(name: str, bilevel: Bilevel, **kwargs) -> Estimator:
    """Build the hypergradient estimator called ``name`` (a key of :data:`HYPERGRADS`)."""
    if name not in HYPERGRADS:
        raise ValueError(f"name: unknown hypergradient {name!r}; allowed values are "
                         f"{list(HYPERGRADS)}")
    return HYPERGRADS[name](bilevel, **kwargs)


__all__ = [
    "HYPERGRADS",
    "Bilevel",
    "HypergradState",
    "TaskIterate",
    "fo",
    "greedy",
    "ift",
    "make",
    "rmd",
    "shaban_exact",
    "shaban_toy",
    "t1t2",
    "task_bilevel",
]
