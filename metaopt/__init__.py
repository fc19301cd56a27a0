"""metaopt: meta-optimization in JAX -- learned optimizers and metaparameter tuning.

Public API; implementation modules are internal and may move.
"""

from metaopt.inner import InnerProblem, InnerState, StepOut, inner_problem, truncation

__version__ = "0.1.0"

__all__ = [
    "InnerProblem",
    "InnerState",
    "StepOut",
    "inner_problem",
    "truncation",
]
