"""Outer-gradient estimators: ``Estimator(init(key, theta), estimate(key, theta, state))``.

* :func:`full_backprop` -- exact reverse mode through whole episodes (optional remat);
* :func:`truncated_backprop` -- TBPTT, inner state carried across truncations (biased);
* :func:`antithetic_es` -- antithetic ES over whole episodes (smoothed, unbiased);
* :func:`truncated_es` -- antithetic ES over truncations, state carried (biased);
* :func:`pes` -- persistent ES (Vicol et al. 2021), unbiased over truncations, reset-aware;
* :func:`noise_reuse_es` -- NRES (Li et al. 2023): one perturbation per episode, reset-aware;
* ``rank=r`` on the ES family: low-rank perturbations of 2-D leaves (:mod:`.lowrank_noise`);
* the hypergradients of :mod:`metaopt.hypergrad` -- ``fo``, ``t1t2``, ``greedy``, ``ift``,
  ``rmd`` -- on the same inner problems;
* :func:`mixture` -- a weighted mixture of task families, one estimator each.

:data:`REGISTRY` (a :class:`metaopt.spec.Registry`) holds these factories by name;
:func:`make` builds one by name for an inner problem.
"""

from __future__ import annotations

from metaopt.estimators.backprop import full_backprop
from metaopt.estimators.base import META_LOSSES, Estimator, NoState
from metaopt.estimators.es import TruncatedESState, antithetic_es, truncated_es
from metaopt.estimators.mixture import mixture
from metaopt.estimators.noise_reuse_es import NRESState, noise_reuse_es
from metaopt.estimators.persistent_es import PESState, pes, pes_particle_grads
from metaopt.estimators.tbptt import TBPTTState, truncated_backprop
from metaopt.spec import Registry

REGISTRY = Registry("estimator", args=("problem",))
for _name, _fn in {
    "full_backprop": full_backprop,
    "tbptt": truncated_backprop,
    "es": antithetic_es,
    "truncated_es": truncated_es,
    "pes": pes,
    "nres": noise_reuse_es,
}.items():
    REGISTRY.register(_name, _fn)

from metaopt import hypergrad as _hg  # noqa: E402  (its estimators import estimators.base)

for _name in _hg.NAMES:
    REGISTRY.register(_name, getattr(_hg, _name))


def names() -> tuple[str, ...]:
    """Registered estimator names."""
    return REGISTRY.names()


def make(name: str, problem, **options) -> Estimator:
    """Build the estimator called ``name`` for ``problem`` with its ``options``."""
    return REGISTRY.make(name, problem, **options)


__all__ = [
    "META_LOSSES",
    "REGISTRY",
    "Estimator",
    "NRESState",
    "NoState",
    "PESState",
    "TBPTTState",
    "TruncatedESState",
    "antithetic_es",
    "full_backprop",
    "make",
    "mixture",
    "names",
    "noise_reuse_es",
    "pes",
    "pes_particle_grads",
    "truncated_backprop",
    "truncated_es",
]
