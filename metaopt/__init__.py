"""metaopt: meta-optimization in JAX -- learned optimizers and metaparameter tuning.

Public API (implementation modules are internal and may move):

* tasks -- :mod:`tasks` (``tasks.make(name)``, ``tasks.names()``), :class:`Task`,
  :class:`TaskFamily` (any object with their functions is accepted too);
* inner problems on the one engine -- :class:`InnerProblem`, :func:`inner_problem`,
  :func:`map_problem`, :mod:`truncation`;
* learned optimizers as optax transforms -- :mod:`lopt` (``lopt.make(name)``, ``lopt.names()``),
  :class:`LearnedOptimizer`;
* outer-gradient estimators -- :mod:`estimators` (backprop, TBPTT, ES, PES and the
  hypergradients FO, T1-T2, greedy, IFT, RMD of :mod:`hypergrad`), all :class:`Estimator`;
* specs and registries -- :mod:`spec` (:class:`Spec`, :class:`Registry`), one per concept;
* the pure outer step -- :class:`OuterState`, :func:`outer_trainer`;
* data parallelism -- :mod:`distributed`;
* pretrained learned optimizers -- :mod:`pretrained` (``pretrained.load(name)``).

The run driver (``metaopt.train``: config, checkpoints, eval, plots) is imported on demand, as it
pulls in orbax and matplotlib.
"""

from metaopt import distributed, estimators, hypergrad, lopt, pretrained, spec, tasks
from metaopt.estimators import Estimator
from metaopt.inner import InnerProblem, InnerState, StepOut, inner_problem, map_problem, truncation
from metaopt.lopt import LearnedOptimizer, MissingExtraArgError
from metaopt.outer import OuterState, OuterTrainer, outer_step, outer_trainer
from metaopt.spec import Registry, Spec, SpecError
from metaopt.tasks import Task, TaskFamily

__version__ = "0.1.0"

__all__ = [
    "Estimator",
    "InnerProblem",
    "InnerState",
    "LearnedOptimizer",
    "MissingExtraArgError",
    "OuterState",
    "OuterTrainer",
    "Registry",
    "Spec",
    "SpecError",
    "StepOut",
    "Task",
    "TaskFamily",
    "distributed",
    "estimators",
    "hypergrad",
    "inner_problem",
    "lopt",
    "map_problem",
    "outer_step",
    "outer_trainer",
    "pretrained",
    "spec",
    "tasks",
    "truncation",
]
