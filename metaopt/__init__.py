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
* the pure outer step -- :class:`OuterState`, :func:`outer_trainer`, and the outer optimizers
  by name -- :mod:`outer_optimizers` (adam, sgd, adamw, rmsprop, ``self``, ``frozen``);
* data parallelism -- :mod:`distributed`;
* learned black-box optimization (Chen et al. 2017) -- :mod:`blackbox`;
* the dual form of gradient descent (a GD-trained linear layer = linear attention over its
  inputs and errors; momentum = attention with momentum) -- :mod:`dual_form`;
* saved learned optimizers -- :func:`load_optimizer` (a run directory, a saved file or a
  pretrained name -> ``(lopt, theta)``), :func:`describe_optimizer` (its
  :class:`SavedOptimizer`: spec, trained step budget, validation-loss input),
  :func:`save_optimizer`; the shipped ones in :mod:`pretrained`;
* metaparameters without an inner unroll -- :mod:`hypernet` (best-response hypernetworks),
  :mod:`complexity_control` (one hypernetwork for a range of model complexities),
  :mod:`gd_entropy` (evidence from the entropy of gradient descent).

The run driver (``metaopt.train``: run config, checkpoints, eval, plots) and the command line
(``metaopt.cli``) sit on top; nothing here imports them.
"""

from metaopt import (
    blackbox,
    complexity_control,
    distributed,
    dual_form,
    estimators,
    gd_entropy,
    hypergrad,
    hypernet,
    lopt,
    outer_optimizers,
    pretrained,
    spec,
    tasks,
)
from metaopt.estimators import Estimator
from metaopt.inner import InnerProblem, InnerState, StepOut, inner_problem, map_problem, truncation
from metaopt.io.saved import SavedOptimizer, describe_optimizer, load_optimizer, save_optimizer
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
    "SavedOptimizer",
    "StepOut",
    "Task",
    "TaskFamily",
    "blackbox",
    "describe_optimizer",
    "distributed",
    "dual_form",
    "estimators",
    "hypergrad",
    "inner_problem",
    "load_optimizer",
    "lopt",
    "map_problem",
    "outer_optimizers",
    "outer_step",
    "outer_trainer",
    "pretrained",
    "save_optimizer",
    "spec",
    "tasks",
    "truncation",
    # hypernetworks, complexity control, evidence from the entropy of gradient descent
    "complexity_control",
    "gd_entropy",
    "hypernet",
]
