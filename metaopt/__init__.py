"""metaopt: meta-optimization in JAX -- learned optimizers and metaparameter tuning.

Public API (implementation modules are internal and may move):

* inner problems -- :class:`InnerProblem`, :func:`inner_problem`, :mod:`truncation`;
* learned optimizers as optax transforms -- :mod:`lopt` (``lopt.make(name)``, ``lopt.names()``),
  :class:`LearnedOptimizer`;
* outer-gradient estimators -- :mod:`estimators` (backprop, TBPTT, ES, PES) and
  :mod:`hypergrad` (FO, T1-T2, greedy, IFT, RMD), all :class:`Estimator`;
* the pure outer step -- :class:`OuterState`, :func:`outer_trainer`;
* data parallelism -- :mod:`distributed`;
* pretrained learned optimizers -- :mod:`pretrained` (``pretrained.load(name)``).

The run driver (``metaopt.train``: config, checkpoints, eval, plots) is imported on demand, as it
pulls in orbax and matplotlib.
"""

from metaopt import distributed, estimators, hypergrad, lopt, pretrained
from metaopt.estimators import Estimator
from metaopt.inner import InnerProblem, InnerState, StepOut, inner_problem, truncation
from metaopt.lopt import LearnedOptimizer, MissingExtraArgError
from metaopt.outer import OuterState, OuterTrainer, outer_step, outer_trainer

__version__ = "0.1.0"

__all__ = [
    "Estimator",
    "InnerProblem",
    "InnerState",
    "LearnedOptimizer",
    "MissingExtraArgError",
    "OuterState",
    "OuterTrainer",
    "StepOut",
    "distributed",
    "estimators",
    "hypergrad",
    "inner_problem",
    "lopt",
    "outer_step",
    "outer_trainer",
    "pretrained",
    "truncation",
]
