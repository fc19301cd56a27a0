"""Learned optimizers by name: the one learned-optimizer registry (:class:`metaopt.spec.Registry`).

``make(name, **options) -> LearnedOptimizer`` calls the constructor registered under ``name``
with its static configuration (options checked against its signature); ``names()`` lists them
in a fixed order. Run configs and saved optimizers name them as specs of :data:`REGISTRY`.
Every entry's optimizers check their arguments (theta, params, updates: :mod:`.checks`).

=========================  ==============================================================
name                       constructor
=========================  ==============================================================
``sgd``                    :func:`~metaopt.lopt.hparam.learnable_sgd` (lr 0.1)
``momentum``               :func:`~metaopt.lopt.hparam.learnable_momentum` (0.1, 0.9)
``adam``                   :func:`~metaopt.lopt.hparam.learnable_adam` (optax.adam defaults)
``momentum_inverse_power`` momentum with the schedule ``(1 + k/K)^(-beta)`` of Wu et al. 2018
``mlp_small``              :func:`~metaopt.lopt.mlp.mlp_small` (per-parameter MLP, width 4)
``mlp``                    :func:`~metaopt.lopt.mlp.mlp_lopt` (per-parameter MLP, 2 x 32)
``lstm``                   :func:`~metaopt.lopt.lstm.lstm_lopt` (Andrychowicz et al. 2016)
``hierarchical``           :func:`~metaopt.lopt.hierarchical.hierarchical_lopt` (Metz 2020)
``norm_mlp``               :func:`~metaopt.lopt.norm_mlp.norm_mlp` (Celo2-style normalized
                           per-parameter MLP, learned Celo-style schedule)
=========================  ==============================================================
"""

from __future__ import annotations

import functools

from metaopt.lopt.base import LearnedOptimizer
from metaopt.lopt.checks import checked_constructor
from metaopt.lopt.hierarchical import hierarchical_lopt
from metaopt.lopt.hparam import learnable_adam, learnable_momentum, learnable_sgd
from metaopt.lopt.lstm import lstm_lopt
from metaopt.lopt.mlp import mlp_lopt, mlp_small
from metaopt.lopt.norm_mlp import norm_mlp
from metaopt.spec import Registry

REGISTRY = Registry("lopt", noun="learned optimizer")
for _name, _fn in {
    "sgd": learnable_sgd,
    "momentum": learnable_momentum,
    "adam": learnable_adam,
    "momentum_inverse_power": functools.partial(learnable_momentum, schedule="inverse_power"),
    "mlp_small": mlp_small,
    "mlp": mlp_lopt,
    "lstm": lstm_lopt,
    "hierarchical": hierarchical_lopt,
    "norm_mlp": norm_mlp,
}.items():
    REGISTRY.register(_name, checked_constructor(_fn))  # clear errors on wrong arguments


def names() -> tuple[str, ...]:
    """All registered learned-optimizer names."""
    return REGISTRY.names()


def make(name: str, **options) -> LearnedOptimizer:
    """The learned optimizer registered as ``name``, built with ``options``."""
    return REGISTRY.make(name, **options)
