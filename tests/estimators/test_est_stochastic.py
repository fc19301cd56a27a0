"""ES and PES against exact gradients of their Gaussian-smoothed objectives.

Each statistical test draws ``N`` independent particles (an estimator with ``num_tasks=1``,
vmapped over ``N`` keys), so the standard error ``SE = std / sqrt(N)`` is measured, and asserts
``|mean - reference| < 4 SE``. The references are exact expectations over the perturbations,
computed in float64 by Gauss-Hermite quadrature of the exact (autodiff, closed-form) gradient
at perturbed thetas. Each test also asserts its own power: ``4 SE`` is far below the errors
of the wrong implementations named in the test (a factor 2, no accumulation, TBPTT's bias).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadratic_reference as Q

from metaopt import estimators as E
from metaopt.estimators import persistent_es

SIGMA = 0.1
LOG_LR = float(np.log(0.3))
THETA = {"log_lr": jnp.asarray(LOG_LR, jnp.float32)}


def gauss_hermite_mean(fn, dims: int, sigma: float, points: int) -> float:
    """``E_{eps ~ N(0, sigma^2 I_dims)} fn(eps)`` by a tensor Gauss-Hermite rule (float64)."""
    x, w = np.polynomial.hermite_e.hermegauss(points)
    nodes = np.array(list(itertools.product(x, repeat=dims)))
    weights = np.prod(np.array(list(itertools.product(w, repeat=dims))), axis=1)
    with jax.enable_x64(True):
        vals = np.asarray(jax.jit(jax.vmap(fn))(jnp.asarray(sigma * nodes)))
    return float(np.sum(vals * weights) / np.sqrt(2 * np.pi) ** dims)


def particle_sums(est, num_truncations: int, n: int, seed: int = 0) -> np.ndarray:
    """``[n]`` samples of ``sum_k g_k`` over ``num_truncations`` calls, one particle each."""

    def one(key):
        k0, k1 = jax.random.split(key)

        def body(state, k):
            g, state, _ = est.estimate(k, THETA, state)
            return state, g["log_lr"]

        _, grads = jax.lax.scan(body, est.init(k0, THETA),
                                jax.random.split(k1, num_truncations))
        return jnp.sum(grads)

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return np.asarray(jax.jit(jax.vmap(one))(keys), np.float64)


def mean_se(samples):
    return samples.mean(), samples.std(ddof=1) / np.sqrt(samples.size)


def test_antithetic_es_matches_the_smoothed_gradient():
    """Full-episode ES at sigma=0.3, where smoothing shifts the gradient measurably."""
    horizon, sigma, log_lr = 20, 0.3, float(np.log(0.05))
    theta = {"log_lr": jnp.asarray(log_lr, jnp.float32)}

    def grad_at(eps):  # exact gradient of the 20-step mean validation loss at log_lr + eps
        f = lambda a: Q.objective(jnp.full(horizon, a), "valid", horizon, horizon)
        return jax.grad(f)(log_lr + eps[0])

    ref = gauss_hermite_mean(grad_at, 1, sigma, 60)
    with jax.enable_x64(True):
        unsmoothed = float(grad_at(jnp.zeros(1)))
    est = E.antithetic_es(Q.problem(Q.fixed_task(), horizon), num_tasks=1, sigma=sigma)
    keys = jax.random.split(jax.random.PRNGKey(0), 200_000)
    one = lambda k: est.estimate(k, theta, est.init(k, theta))[0]["log_lr"]
    mean, se = mean_se(np.asarray(jax.jit(jax.vmap(one))(keys), np.float64))
    assert abs(mean - ref) < 4 * se, (mean, ref, se)
    assert 4 * se < 0.05 * abs(ref)  # power: a factor 2 (or 1/2) would fail by > 10 SE
    assert abs(unsmoothed - ref) > 4 * se  # the target is the smoothed gradient, not dF


def test_pes_is_unbiased_over_truncations_where_tbptt_and_truncated_es_are_not():
    """One 20-step episode as 4 truncations of 5; sum of the 4 estimates vs the gradient of
    E_{eps_1..4} sum_k L_k(theta + eps_1, ..., theta + eps_k)."""
    horizon, trunc = 20, 5
    k = horizon // trunc
    prob = Q.problem(Q.fixed_task(), horizon)

    def grad_at(eps):
        f = lambda a: Q.objective(jnp.repeat(a + eps, trunc), "valid", trunc, horizon)
        return jax.grad(f)(jnp.float64(LOG_LR))

    ref = gauss_hermite_mean(grad_at, k, SIGMA, 8)
    kw = dict(num_tasks=1, sigma=SIGMA, unroll_length=trunc, stagger="none")
    pes_mean, pes_se = mean_se(particle_sums(E.pes(prob, **kw), k, 20_000))
    tes_mean, tes_se = mean_se(particle_sums(E.truncated_es(prob, **kw), k, 20_000, seed=1))
    tbptt = E.truncated_backprop(prob, num_tasks=1, unroll_length=trunc, stagger="none")
    tb = float(particle_sums(tbptt, k, 1)[0])  # deterministic

    assert abs(pes_mean - ref) < 4 * pes_se, (pes_mean, ref, pes_se)
    assert 4 * pes_se < 0.1 * abs(ref)  # power against a factor 2
    # TBPTT is measurably biased (by ~35% here), and so is ES without PES's accumulation
    assert abs(tb - ref) > 0.2 * abs(ref) and abs(tb - ref) > 20 * pes_se, (tb, ref)
    assert abs(tes_mean - ref) > 8 * np.hypot(tes_se, pes_se), (tes_mean, ref)


def test_pes_with_episodes_ending_mid_truncation_is_unbiased():
    """Episodes of 12 steps, truncations of 5: resets at steps 11 and 23 fall inside
    truncations 2 and 4. Reference: the gradient of E sum_k L_k with per-truncation eps_k and
    episodes restarting from the init."""
    episode, trunc, k = 12, 5, 6
    prob = Q.problem(Q.fixed_task(), episode)

    def grad_at(eps):
        f = lambda a: Q.objective(jnp.repeat(a + eps, trunc), "valid", trunc, episode)
        return jax.grad(f)(jnp.float64(LOG_LR))

    ref = gauss_hermite_mean(grad_at, k, SIGMA, 5)
    est = E.pes(prob, num_tasks=1, sigma=SIGMA, unroll_length=trunc, stagger="none")
    mean, se = mean_se(particle_sums(est, k, 20_000))
    assert abs(mean - ref) < 4 * se, (mean, ref, se)
    assert 4 * se < 0.05 * abs(ref)


def test_pes_accumulator_restarts_at_episode_boundaries():
    """Var(xi) / sigma^2 after each truncation: 1 + (truncations since the episode began),
    and exactly 1 (only the current eps) after a truncation containing a reset."""
    episode, trunc, n = 12, 5, 4000
    est = E.pes(Q.problem(Q.fixed_task(), episode), num_tasks=n, sigma=SIGMA,
                unroll_length=trunc, stagger="none")
    state = jax.jit(est.init)(jax.random.PRNGKey(0), THETA)
    step = jax.jit(est.estimate)
    ratios, resets = [], []
    for key in jax.random.split(jax.random.PRNGKey(1), 5):
        _, state, metrics = step(key, THETA, state)
        ratios.append(float(jnp.var(state.xi["log_lr"])) / SIGMA**2)
        resets.append(float(metrics["resets"]))
    # steps 0-4 | 5-9 | 10-14 (reset after 11) | 15-19 | 20-24 (reset after 23)
    np.testing.assert_allclose(ratios, [1, 2, 1, 2, 1], rtol=0.1)
    assert resets == [0, 0, n, 0, n]


def test_pes_particle_grads_splits_at_the_reset():
    """Exact values of the reset-aware per-particle terms (hand-computed)."""
    diff = jnp.array([[1.0, 2, 3, 4, 5], [1, 2, 3, 4, 5], [1, 2, 3, 4, jnp.nan]])
    done = jnp.array([[0, 1, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 1, 0]], bool)
    valid = jnp.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    xi, eps = {"a": jnp.array([0.5, 0.5, 0.5])}, {"a": jnp.array([0.25, 0.25, 0.25])}
    weights = np.full(5, 0.2)
    g, xi_new = persistent_es.pes_particle_grads(diff, weights, valid, done, xi, eps, 0.5)
    # 1/(2 sigma^2) = 2. Particle 0: pre = (1+2)/5 with xi+eps = .75, post = (3+4+5)/5 with eps
    # particle 1: no reset; particle 2: reset after step 3, step 4 masked (NaN ignored)
    np.testing.assert_allclose(g["a"], [2 * (0.6 * 0.75 + 2.4 * 0.25), 2 * 3.0 * 0.75,
                                        2 * 2.0 * 0.75], rtol=1e-6)
    np.testing.assert_allclose(xi_new["a"], [0.25, 0.75, 0.25])


@pytest.mark.slow
def test_reset_statistics_catch_a_broken_accumulator(monkeypatch):
    """Power check of the reset test: restarting xi at 0 instead of eps is biased (> 4 SE)."""
    episode, trunc, k = 12, 5, 6
    prob = Q.problem(Q.fixed_task(), episode)

    def grad_at(eps):
        f = lambda a: Q.objective(jnp.repeat(a + eps, trunc), "valid", trunc, episode)
        return jax.grad(f)(jnp.float64(LOG_LR))

    ref = gauss_hermite_mean(grad_at, k, SIGMA, 5)
    good = persistent_es.pes_particle_grads

    def zero_restart(diff, weights, valid, done, xi, eps, sigma):
        g, xi_new = good(diff, weights, valid, done, xi, eps, sigma)
        zeros = jax.tree.map(jnp.zeros_like, eps)
        return g, jax.tree.map(lambda z, x: jnp.where(jnp.any(done, 1), z, x), zeros, xi_new)

    monkeypatch.setattr(persistent_es, "pes_particle_grads", zero_restart)
    est = E.pes(prob, num_tasks=1, sigma=SIGMA, unroll_length=trunc, stagger="none")
    mean, se = mean_se(particle_sums(est, k, 20_000))
    assert abs(mean - ref) > 4 * se, (mean, ref, se)
