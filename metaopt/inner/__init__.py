"""The pure inner loop: truncated unrolls of a task under an optax optimizer."""

from metaopt.inner import truncation
from metaopt.inner.problem import InnerProblem, InnerState, StepOut, inner_problem

__all__ = ["InnerProblem", "InnerState", "StepOut", "inner_problem", "truncation"]
