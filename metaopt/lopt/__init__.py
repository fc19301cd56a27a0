"""Learned optimizers as optax transformations: ``init(key) -> theta``,
``optimizer(theta, **static) -> optax.GradientTransformationExtraArgs`` (see :mod:`.base`)."""

from metaopt.lopt import schedules
from metaopt.lopt.base import DEFAULT_NUM_STEPS, LearnedOptimizer, MissingExtraArgError
from metaopt.lopt.hierarchical import HierarchicalState, hierarchical_lopt
from metaopt.lopt.hparam import (
    AdamState,
    MomentumState,
    SGDState,
    learnable_adam,
    learnable_momentum,
    learnable_sgd,
)
from metaopt.lopt.lstm import LSTMState, lstm_lopt
from metaopt.lopt.mlp import MLPState, mlp_lopt, mlp_small
from metaopt.lopt.norm_mlp import NormMLPState, norm_mlp
from metaopt.lopt.registry import REGISTRY, make, names

__all__ = [
    "DEFAULT_NUM_STEPS",
    "REGISTRY",
    "AdamState",
    "HierarchicalState",
    "LSTMState",
    "LearnedOptimizer",
    "MLPState",
    "MissingExtraArgError",
    "NormMLPState",
    "MomentumState",
    "SGDState",
    "hierarchical_lopt",
    "learnable_adam",
    "learnable_momentum",
    "learnable_sgd",
    "lstm_lopt",
    "make",
    "mlp_lopt",
    "mlp_small",
    "names",
    "norm_mlp",
    "schedules",
]
