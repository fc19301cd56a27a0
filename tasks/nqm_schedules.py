"""Learning-rate schedules on the exact noisy quadratic model (Wu, Ren, Liao & Grosse 2018).

On the NQM of :mod:`metaopt.tasks.nqm` the expected loss of SGD / heavy-ball momentum is an
exact recursion in the per-coordinate moments ``s_t`` (:class:`~metaopt.tasks.nqm.NQMMoments`),
so the schedules of the short-horizon-bias paper can be computed without sampling:

* **greedy** (:func:`greedy_lr`, :func:`greedy_schedule`): at each step the rate minimizing the
  expected loss *after that step*. With the update ``theta' = theta - alpha d``,
  ``d = beta v + h (theta - c)`` (``c ~ N(0, sigma^2)`` fresh), the one-step excess loss
  ``1/2 sum_i h_i (E theta_i^2 - 2 alpha E[theta_i d_i] + alpha^2 E[d_i^2])`` is a parabola in
  ``alpha``, so

      alpha* = sum_i h_i E[theta_i d_i] / sum_i h_i E[d_i^2],
      E[theta d] = beta E[theta v] + h E[theta^2],
      E[d^2] = beta^2 E[v^2] + 2 beta h E[theta v] + h^2 (E[theta^2] + sigma^2).

  For SGD (``beta = 0``): ``alpha* = sum h^2 E theta^2 / sum h^3 (E theta^2 + sigma^2)``. In one
  dimension greedy is also horizon-optimal (the paper's Theorem 1; a tested property here);
  with many curvatures and noise it decays too fast.
* **horizon-optimal** (:func:`horizon_optimal_schedule`): the schedule minimizing the expected
  loss at step ``T``, found by gradient descent (Adam) on ``log E L(theta_T)`` with exact
  gradients through the recursion, over rates in the stable range
  ``alpha = 2 (1 + beta) / h_max * sigmoid(zeta)``; ``zeta`` is either per step
  (``num_knots=None``) or piecewise linear in ``log(1 + t)`` between ``num_knots`` knots (the
  flexible parameterization for long horizons).
* **parametric** (:func:`nqm_schedule_bilevel`): a :class:`~metaopt.hypergrad.Bilevel` whose
  iterate is ``(s_t, t)`` and whose objective is the exact excess loss, for a schedule given as
  ``rate(theta, t, T)`` (e.g. :func:`metaopt.lopt.schedules.rate` of the paper's
  ``a_0 (1 + t/K)^(-beta)``): every estimator of the library (TBPTT, PES, greedy, RMD) runs on
  it with no sampling noise, so its bias is measurable exactly.

Losses here are *excess* losses (the irreducible ``1/2 sum h sigma^2`` removed).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from metaopt.tasks.nqm import (
    NQMConfig,
    NQMMoments,
    nqm_excess_loss,
    nqm_expected_loss,
    nqm_moment_step,
    nqm_moments_init,
)

PyTree = Any


def greedy_lr(cfg: NQMConfig, s: NQMMoments, momentum: float | jax.Array = 0.0) -> jax.Array:
    """The one-step-optimal rate at moments ``s`` (closed form, module docstring)."""
    h = cfg.curvature
    e_tt = s.mean * s.mean + s.var
    e_tv = s.mean * s.mean_v + s.cov
    e_vv = s.mean_v * s.mean_v + s.var_v
    e_td = momentum * e_tv + h * e_tt
    e_dd = momentum**2 * e_vv + 2.0 * momentum * h * e_tv + h * h * (e_tt + cfg.noise_var)
    return jnp.sum(h * e_td) / jnp.maximum(jnp.sum(h * e_dd), jnp.finfo(e_dd.dtype).tiny)


def greedy_schedule(cfg: NQMConfig, horizon: int, momentum: float = 0.0
                    ) -> tuple[jax.Array, jax.Array]:
    """Greedy rates ``[T]`` and the excess losses ``[T + 1]`` they give."""

    def step(s, _):
        a = greedy_lr(cfg, s, momentum)
        return nqm_moment_step(cfg, s, a, momentum), (a, nqm_excess_loss(cfg, s))

    last, (lrs, losses) = jax.lax.scan(step, nqm_moments_init(cfg), None, length=horizon)
    return lrs, jnp.append(losses, nqm_excess_loss(cfg, last))


def sgd_final_loss(cfg: NQMConfig, learning_rates: jax.Array) -> jax.Array:
    """The excess loss at step ``T`` of SGD, ``E L(theta_T)``, without a scan:

        E theta_{T,i}^2 = P_{0,i} E theta_{0,i}^2 + sigma_i^2 h_i^2 sum_t alpha_t^2 P_{t+1,i},
        P_{t,i} = prod_{j >= t} (1 - alpha_j h_i)^2,

    with the products as suffix sums of logs (``[T, n]`` work, all steps in parallel). Equals
    ``nqm_expected_loss(cfg, lrs)[-1]`` (tested); the optimizer of
    :func:`horizon_optimal_schedule` uses it for plain SGD.
    """
    h, s2 = cfg.curvature, cfg.noise_var
    lrs = jnp.asarray(learning_rates)
    fac = jnp.square(1.0 - lrs[:, None] * h[None, :])  # [T, n]
    logs = jnp.log(jnp.maximum(fac, jnp.finfo(fac.dtype).tiny))
    suffix = jnp.cumsum(logs[::-1], axis=0)[::-1]  # [T, n]: log P_t
    after = jnp.concatenate([suffix[1:], jnp.zeros_like(suffix[:1])])  # log P_{t+1}
    second = jnp.exp(suffix[0]) * (cfg.init_mean**2 + cfg.init_var)
    second = second + s2 * h * h * jnp.sum(jnp.square(lrs)[:, None] * jnp.exp(after), axis=0)
    return 0.5 * jnp.sum(h * second)


def knot_rates(z: jax.Array, horizon: int, max_rate: float | jax.Array) -> jax.Array:
    """Rates ``[T]`` in ``(0, max_rate)``: ``alpha = max_rate sigmoid(zeta)`` with ``zeta`` linear
    in ``log(1 + t)`` between ``K = len(z)`` knots evenly spaced on ``[0, log T]`` (``K = T``: one
    value per step, no interpolation)."""
    if z.shape[0] == horizon:
        zeta = z
    else:
        u = jnp.log1p(jnp.arange(horizon, dtype=z.dtype))
        knots = jnp.linspace(0.0, jnp.log(float(max(horizon, 2))), z.shape[0])
        zeta = jnp.interp(u, knots, z)
    return max_rate * jax.nn.sigmoid(zeta)


def best_constant_lr(cfg: NQMConfig, horizon: int, momentum: float = 0.0,
                     grid: jax.Array | None = None) -> jax.Array:
    """The constant rate of ``grid`` (default 64 log-spaced values up to ``4 / h_max``) with the
    lowest excess loss at step ``T`` (non-finite losses lose)."""
    if grid is None:
        grid = jnp.geomspace(1e-3, 4.0, 64) / jnp.max(cfg.curvature)
    final = jax.vmap(lambda a: nqm_expected_loss(cfg, jnp.full((horizon,), a), momentum)[-1])(grid)
    return grid[jnp.argmin(jnp.where(jnp.isfinite(final), final, jnp.inf))]


class OptimalSchedule(NamedTuple):
    lrs: jax.Array  # [T] the schedule
    losses: jax.Array  # [T + 1] its excess losses
    trace: jax.Array  # [steps] log final excess loss during the descent


def horizon_optimal_schedule(cfg: NQMConfig, horizon: int, *, momentum: float = 0.0,
                             num_knots: int | None = 32, steps: int = 400,
                             learning_rate: float = 0.05) -> OptimalSchedule:
    """Minimize ``log E L(theta_T)`` over the schedule by Adam with exact gradients.

    Starts from :func:`best_constant_lr`; ``num_knots=None`` optimizes one ``log alpha`` per
    step, else ``num_knots`` knots (:func:`knot_rates`). Not jitted as a whole (``horizon``,
    ``num_knots``, ``steps`` are static); call it under ``jax.jit`` with them bound if needed.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 2:
        raise ValueError(f"horizon: must be an int >= 2, got {horizon!r}")
    k = horizon if num_knots is None else num_knots
    if isinstance(k, bool) or not isinstance(k, int) or not 2 <= k <= horizon:
        raise ValueError(f"num_knots: must be None or an int in [2, horizon], got {num_knots!r}")
    max_rate = 2.0 * (1.0 + momentum) / jnp.max(cfg.curvature)  # the stable range
    a0 = jnp.minimum(best_constant_lr(cfg, horizon, momentum), 0.95 * max_rate)
    z0 = jnp.full((k,), jnp.log(a0 / (max_rate - a0)))
    opt = optax.adam(learning_rate)

    def objective(z):
        lrs = knot_rates(z, horizon, max_rate)
        if isinstance(momentum, int | float) and momentum == 0:
            return jnp.log(sgd_final_loss(cfg, lrs))
        return jnp.log(nqm_expected_loss(cfg, lrs, momentum)[-1])

    def step(carry, _):
        z, st, best_z, best = carry
        val, g = jax.value_and_grad(objective)(z)
        good = jnp.isfinite(val) & (val < best)
        best_z, best = jnp.where(good, z, best_z), jnp.where(good, val, best)
        g = jnp.where(jnp.isfinite(g), g, 0.0)
        u, st = opt.update(g, st, z)
        return (optax.apply_updates(z, u), st, best_z, best), val

    carry = (z0, opt.init(z0), z0, jnp.asarray(jnp.inf, z0.dtype))
    (_, _, z, _), trace = jax.lax.scan(step, carry, None, length=steps)
    lrs = knot_rates(z, horizon, max_rate)
    return OptimalSchedule(lrs, nqm_expected_loss(cfg, lrs, momentum), trace)


# ----------------------------------------------------------------------------- bilevel view


class ScheduleIterate(NamedTuple):
    """The iterate of :func:`nqm_schedule_bilevel`: the moments and the step in the episode."""

    moments: NQMMoments
    step: jax.Array  # int32[]


def nqm_schedule_bilevel(cfg: NQMConfig, rate: Callable[[PyTree, jax.Array, jax.Array],
                                                        jax.Array],
                         *, horizon: int, momentum: float = 0.9, name: str = "nqm_exact"):
    """The exact NQM as a :class:`~metaopt.hypergrad.Bilevel` with ``theta`` = a schedule.

    ``phi((s, t), theta) = (step(s, rate(theta, t, T), momentum), t + 1)``; the objective is
    the exact excess loss of ``s`` (deterministic: ``batch`` is empty). Any estimator on it sees
    ``L_val(w_t) = E L(theta_t)`` exactly; episodes last ``horizon`` steps.
    """
    from metaopt.hypergrad import Bilevel  # late: tasks do not import the engine at load

    def init(key, theta):
        del key, theta
        return (), ScheduleIterate(nqm_moments_init(cfg), jnp.zeros((), jnp.int32))

    def phi(w, theta, b):
        del b
        t = w.step.astype(jnp.float32)
        a = rate(theta, t, jnp.asarray(horizon, jnp.float32))
        return ScheduleIterate(nqm_moment_step(cfg, w.moments, a, momentum), w.step + 1)

    def val_loss(w, theta, b):
        del theta, b
        return nqm_excess_loss(cfg, w.moments)

    return Bilevel(init=init, batch=lambda key, c: (), phi=phi, val_loss=val_loss,
                   horizon=horizon, name=name)
