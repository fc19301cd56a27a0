"""A weighted mixture of task families: one estimator per family, one outer gradient.

Families with different parameter shapes (an MLP, a CNN, a quadratic) cannot share one vmap,
so a mixture runs one estimator per member ``i`` -- each on its own inner problem, over its
own batch of tasks -- and combines their estimates of ``d/dtheta E_i[meta-loss]``:

    g = sum_i w_i g_i / sum_i w_i,

an estimate of the gradient of the weighted mean objective ``sum_i w_i E_i / sum_i w_i``
(each ``g_i`` keeps its own estimator's bias and variance). Member ``i`` draws its
randomness from ``fold_in(key, i)``; the state is the tuple of the members' states, each with
its leading task axis (so data parallelism shards every member's tasks).

Metrics: ``meta_loss`` is the same weighted mean of the members' meta-losses, the cost and
event counters (:data:`~metaopt.estimators.base.COUNTERS`) are summed, any other metric is
weighted-averaged over the members that report it, and ``<member>.meta_loss`` reports each
family's own meta-loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from metaopt.estimators import base


def _check(members) -> tuple[tuple[str, float, base.Estimator], ...]:
    if isinstance(members, str | bytes) or not isinstance(members, Sequence) or not members:
        raise ValueError(f"members: expected a non-empty sequence of (name, weight, estimator), "
                         f"got {members!r}")
    out, seen = [], set()
    for i, member in enumerate(members):
        if not (isinstance(member, tuple | list) and len(member) == 3):
            raise ValueError(f"members[{i}]: expected (name, weight, estimator), got {member!r}")
        name, weight, est = member
        if not isinstance(name, str) or not name or "." in name or name in seen:
            raise ValueError(f"members[{i}].name: must be a unique non-empty string without "
                             f"'.', got {name!r}")
        if (isinstance(weight, bool) or not isinstance(weight, int | float)
                or not math.isfinite(weight) or weight <= 0):
            raise ValueError(f"members[{i}].weight: must be a finite number > 0, got {weight!r}")
        if not isinstance(est, base.Estimator):
            raise TypeError(f"members[{i}].estimator: expected a metaopt Estimator, got "
                            f"{type(est).__name__}")
        seen.add(name)
        out.append((name, float(weight), est))
    return tuple(out)


def mixture(members: Sequence[tuple[str, float, base.Estimator]]) -> base.Estimator:
    """The :class:`~metaopt.estimators.Estimator` of a weighted mixture (module docstring).

    Args:
      members: ``(name, weight, estimator)`` per task family; names are unique (they prefix
        the per-family metrics), weights positive (normalized here).
    """
    members = _check(members)
    total = sum(w for _, w, _ in members)
    weights = [w / total for _, w, _ in members]

    def init(key, theta):
        return tuple(est.init(jax.random.fold_in(key, i), theta)
                     for i, (_, _, est) in enumerate(members))

    def estimate(key, theta, state):
        grads, states, metrics = [], [], []
        for i, ((_, _, est), s) in enumerate(zip(members, state, strict=True)):
            g, s, m = est.estimate(jax.random.fold_in(key, i), theta, s)
            grads.append(g)
            states.append(s)
            metrics.append(m)
        grad = jax.tree.map(lambda *gs: sum(w * g for w, g in zip(weights, gs)).astype(gs[0].dtype),
                            *grads)
        combined = {}
        for k in sorted(set().union(*metrics)):
            have = [(w, m[k]) for w, m in zip(weights, metrics) if k in m]
            if k in base.COUNTERS:
                combined[k] = sum(jnp.asarray(v, jnp.float32) for _, v in have)
            else:
                norm = sum(w for w, _ in have)
                combined[k] = sum(w * jnp.asarray(v, jnp.float32) for w, v in have) / norm
        for (name, _, _), m in zip(members, metrics):
            combined[f"{name}.meta_loss"] = jnp.asarray(m["meta_loss"], jnp.float32)
        return grad, tuple(states), combined

    return base.Estimator(init=init, estimate=estimate,
                          name="mixture(" + ",".join(n for n, _, _ in members) + ")")
