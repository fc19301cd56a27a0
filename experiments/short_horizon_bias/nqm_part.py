"""The exact-NQM parts of the short-horizon-bias experiment (Wu, Ren, Liao & Grosse 2018).

(a) horizon-optimal and greedy SGD schedules, with and without noise;
(b) the parametric schedule ``a_k = a_0 (1 + k/K)^(-beta)`` (momentum 0.9) optimized by its
    exact hypergradient at several horizons, then run to the longest one;
(c) the library's estimators (TBPTT, greedy, PES, RMD) tuning that schedule at equal compute.

Everything here is deterministic (exact expected losses), except PES's perturbations.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import estimators as est
from metaopt import hypergrad as hg
from metaopt.lopt import schedules
from metaopt.tasks import nqm_config, nqm_expected_loss
from metaopt.tasks import nqm_schedules as ns

MOMENTUM = 0.9
SCHEDULE = "inverse_power"


def config(noise: bool, dim: int = 100):
    """The paper's setting: ``h`` over three decades, ``sigma^2 = h`` (or 0), ``theta_0 = 1``."""
    return nqm_config(dim=dim, min_curvature=1e-3, max_curvature=1.0,
                      noise_scale=1.0 if noise else 0.0, init_mean=1.0)


def theta_of(a0: float, k: float, beta: float) -> dict:
    return {"log_lr": jnp.float32(math.log(a0)), "log_K": jnp.float32(math.log(k)),
            "beta": jnp.float32(beta)}


def describe(theta: dict, horizon: int, steps=()) -> dict:
    """``(a_0, K, beta)``, the rate at the last step of ``horizon`` and its effective value
    ``a / (1 - momentum)``, and the effective rates at the last step of each of ``steps``."""
    rates = np.asarray(schedules.rates(theta, SCHEDULE, max((horizon, *steps))))
    return {"a0": float(jnp.exp(theta["log_lr"])), "K": float(jnp.exp(theta["log_K"])),
            "beta": float(theta["beta"]), "lr_end": float(rates[horizon - 1]),
            "eff_lr_end": float(rates[horizon - 1]) / (1 - MOMENTUM),
            "eff_lr_at": {k: float(rates[k - 1]) / (1 - MOMENTUM) for k in steps}}


def final_loss(cfg, theta: dict, horizon: int) -> jax.Array:
    lrs = schedules.rates(theta, SCHEDULE, horizon)
    return nqm_expected_loss(cfg, lrs, MOMENTUM)[-1]


# ----------------------------------------------------------------------------- (a)


def sample_points(horizon: int, n: int = 120) -> np.ndarray:
    """Log-spaced step indices in ``[0, horizon]`` (for compact curves in the JSON)."""
    return np.unique(np.concatenate([[0], np.geomspace(1, horizon, n).astype(int)]))


def compact(values, points) -> list:
    values = np.asarray(values, np.float64)
    return values[points[points < values.shape[0]]].tolist()


def part_a(horizons, knots: int, steps: int, noise: bool) -> dict:
    """Horizon-optimal SGD schedules (knots in log-time) and greedy, exact; curves sampled at
    :func:`sample_points`. A horizon-``T`` schedule is continued to the longest horizon at its
    last rate."""
    cfg = config(noise)
    long = max(horizons)
    pts = sample_points(long)
    g_lrs, g_losses = jax.jit(ns.greedy_schedule, static_argnums=1)(cfg, long)
    g_lrs, g_losses = np.asarray(g_lrs), np.asarray(g_losses)
    out = {"points": pts.tolist(),
           "noise_floor": float(0.5 * jnp.sum(cfg.curvature * cfg.noise_var)),
           "greedy": {"lrs": compact(g_lrs, pts), "losses": compact(g_losses, pts),
                      "loss_at": {h: float(g_losses[h]) for h in horizons},
                      "lr_at": {h: float(g_lrs[h - 1]) for h in horizons}},
           "optimal": {}}
    for h in horizons:
        opt = jax.jit(lambda c, h=h: ns.horizon_optimal_schedule(
            c, h, num_knots=min(knots, h), steps=steps))(cfg)
        lrs = np.asarray(opt.lrs)
        cont = jnp.concatenate([opt.lrs, jnp.full((long - h,), opt.lrs[-1])])
        out["optimal"][h] = {
            "lrs": compact(lrs, pts), "losses": compact(opt.losses, pts),
            "trace": np.asarray(opt.trace).tolist(),
            "loss_at_h": float(opt.losses[-1]),
            "lr_at": {k: float(lrs[k - 1]) for k in horizons if k <= h},
            "loss_at_long_continued": float(nqm_expected_loss(cfg, cont)[-1]),
        }
    return out


# ----------------------------------------------------------------------------- (b)


def meta_optimize_exact(cfg, theta0: dict, horizon: int, steps: int, lr: float,
                        compiler_options=None) -> dict:
    """Adam on ``log E L(theta_T)`` with the exact hypergradient (reverse mode through the
    recursion); keeps the best iterate."""
    opt = optax.adam(lr)
    obj = lambda th: jnp.log(final_loss(cfg, th, horizon))

    def step(carry, _):
        th, st, best_th, best = carry
        val, g = jax.value_and_grad(obj)(th)
        good = jnp.isfinite(val) & (val < best)
        best_th = jax.tree.map(lambda a, b: jnp.where(good, a, b), th, best_th)
        best = jnp.where(good, val, best)
        g = jax.tree.map(lambda x: jnp.where(jnp.isfinite(x), x, 0.0), g)
        u, st = opt.update(g, st, th)
        return (optax.apply_updates(th, u), st, best_th, best), val

    carry = (theta0, opt.init(theta0), theta0, jnp.float32(jnp.inf))
    (_, _, best_th, _), trace = jax.jit(
        lambda c: jax.lax.scan(step, c, None, length=steps),
        compiler_options=compiler_options)(carry)
    return best_th


def part_b(horizons, steps: int, lr: float, compiler_options=None) -> dict:
    cfg = config(True)
    long = max(horizons)
    theta0 = theta_of(0.1, 100.0, 0.5)
    rows = {}
    for h in horizons:
        th = meta_optimize_exact(cfg, theta0, h, steps, lr, compiler_options)
        rows[h] = {**describe(th, h, horizons), "loss_at_h": float(final_loss(cfg, th, h)),
                   "loss_at_long": float(final_loss(cfg, th, long)),
                   "theta": {k: float(v) for k, v in th.items()}}
    return rows


# ----------------------------------------------------------------------------- (c)


def estimators_for(problem, truncation: int, tasks: int, horizon: int, gammas, sigma: float):
    """name -> (estimator, inner steps per outer step); ``problem`` an InnerProblem or a
    Bilevel."""
    problem = hg.as_problem(problem)
    out = {"TBPTT": (est.truncated_backprop(problem, num_tasks=tasks, unroll_length=truncation,
                                            meta_loss="last"), tasks * truncation)}
    for g in gammas:
        out[f"greedy γ={g}"] = (hg.greedy(problem, gamma=g, num_tasks=tasks,
                                          unroll_length=truncation), tasks * truncation)
    out["PES"] = (est.pes(problem, num_tasks=tasks, sigma=sigma, unroll_length=truncation,
                          meta_loss="last"), 2 * tasks * truncation)
    out["RMD (full)"] = (hg.rmd(problem, num_tasks=1, horizon=horizon), horizon)
    return out


def run_estimator(estimator, theta0: dict, outer_steps: int, lr: float, seeds: int,
                  record_every: int, evaluate=None, compiler_options=None):
    """Adam on the estimator's gradient for ``seeds`` independent runs (vmapped); with
    ``evaluate(theta) -> scalar``, its value every ``record_every`` steps. Returns the final
    thetas (leading axis ``[seeds]``) and the curves ``[seeds, chunks + 1]`` (or ``None``)."""
    from metaopt.outer import outer_trainer

    trainer = outer_trainer(estimator, optax.adam(lr))
    keys = jnp.stack([jax.random.key(s) for s in range(seeds)])
    state = jax.jit(jax.vmap(lambda k: trainer.init(jax.random.fold_in(k, 1), theta0)))(keys)
    chunks = max(outer_steps // record_every, 1)
    evaluate_all = None if evaluate is None else jax.vmap(evaluate)

    @functools.partial(jax.jit, compiler_options=compiler_options)
    def chunk(state, keys):  # keys [seeds, record_every]
        def one(st, ks):
            return jax.lax.scan(lambda s, k: trainer.step(k, s), st, ks)[0]

        state = jax.vmap(one)(state, keys)
        return state, (None if evaluate_all is None else evaluate_all(state.theta))

    curve = [] if evaluate is None else [np.asarray(evaluate_all(state.theta))]
    run_keys = jax.vmap(lambda k: jax.random.split(jax.random.fold_in(k, 2),
                                                   (chunks, record_every)))(keys)
    for c in range(chunks):
        state, val = chunk(state, run_keys[:, c])
        if evaluate is not None:
            curve.append(np.asarray(val))
    return state.theta, (None if evaluate is None else np.stack(curve, axis=1))
