"""The one inner engine: truncated unrolls of an inner problem, vmapped over tasks.

* :func:`inner_problem` -- a task (or family) trained by an optax / learned optimizer;
* :func:`map_problem` -- a problem given by its update map ``w' = Phi(w, ctx; batch)``;
* :mod:`truncation` -- episode-length schedules and staggered starts.

Both build an :class:`InnerProblem` (:mod:`metaopt.inner.core`) that every estimator runs on.
"""

from metaopt.inner import truncation
from metaopt.inner.core import InnerProblem, InnerState, StepOut
from metaopt.inner.map_problem import map_problem
from metaopt.inner.problem import inner_problem

__all__ = ["InnerProblem", "InnerState", "StepOut", "inner_problem", "map_problem", "truncation"]
