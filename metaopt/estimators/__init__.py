"""Outer-gradient estimators: ``Estimator(init(key, theta), estimate(key, theta, state))``.

* :func:`full_backprop` -- exact reverse mode through whole episodes (optional remat);
* :func:`truncated_backprop` -- TBPTT, inner state carried across truncations (biased);
* :func:`antithetic_es` -- antithetic ES over whole episodes (smoothed, unbiased);
* :func:`truncated_es` -- antithetic ES over truncations, state carried (biased);
* :func:`pes` -- persistent ES (Vicol et al. 2021), unbiased over truncations, reset-aware.

:data:`ESTIMATORS` maps names to these factories; :func:`make` builds one by name.
"""

from __future__ import annotations

from metaopt.estimators.backprop import full_backprop
from metaopt.estimators.base import META_LOSSES, Estimator, NoState
from metaopt.estimators.es import TruncatedESState, antithetic_es, truncated_es
from metaopt.estimators.persistent_es import PESState, pes, pes_particle_grads
from metaopt.estimators.tbptt import TBPTTState, truncated_backprop

ESTIMATORS = {
    "full_backprop": full_backprop,
    "tbptt": truncated_backprop,
    "es": antithetic_es,
    "truncated_es": truncated_es,
    "pes": pes,
}


def make(name: str, problem, **kwargs) -> Estimator:
    """Build the estimator called ``name`` (a key of :data:`ESTIMATORS`) for ``problem``."""
    if name not in ESTIMATORS:
        raise ValueError(f"name: unknown estimator {name!r}; allowed values are {list(ESTIMATORS)}")
    return ESTIMATORS[name](problem, **kwargs)


__all__ = [
    "ESTIMATORS",
    "META_LOSSES",
    "Estimator",
    "NoState",
    "PESState",
    "TBPTTState",
    "TruncatedESState",
    "antithetic_es",
    "full_backprop",
    "make",
    "pes",
    "pes_particle_grads",
    "truncated_backprop",
    "truncated_es",
]
