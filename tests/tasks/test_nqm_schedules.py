"""Schedules on the exact NQM (tasks/nqm_schedules.py) against independent references: the
greedy closed form against a numerical argmin, the scan-free SGD loss against the recursion,
greedy = horizon-optimal in one dimension (Wu et al. 2018, Theorem 1), and the exact-NQM
Bilevel's reverse-mode hypergradient against float64 finite differences of the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import hypergrad as hg
from metaopt.lopt import schedules
from metaopt.tasks import nqm_config, nqm_expected_loss
from metaopt.tasks import nqm_schedules as ns
from metaopt.tasks.nqm import nqm_excess_loss, nqm_moment_step, nqm_moments_init


def _cfg(dim=16, noise=0.5):
    return nqm_config(dim=dim, min_curvature=0.01, max_curvature=1.0, noise_scale=noise,
                      init_mean=1.0, init_std=0.3)


def _moments_after(cfg, lrs, momentum):
    s = nqm_moments_init(cfg)
    for a in lrs:
        s = nqm_moment_step(cfg, s, a, momentum)
    return s


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_greedy_lr_is_the_one_step_argmin(momentum):
    cfg = _cfg()
    s = _moments_after(cfg, [0.7, 0.3, 1.1], momentum)  # nonzero mean, var and covariances
    a_star = float(ns.greedy_lr(cfg, s, momentum))
    grid = np.linspace(0.0, 3.0, 30001)
    one_step = jax.vmap(lambda a: nqm_excess_loss(cfg, nqm_moment_step(cfg, s, a, momentum)))
    values = np.asarray(one_step(jnp.asarray(grid, jnp.float32)), np.float64)
    a_num = grid[np.argmin(values)]
    assert abs(a_star - a_num) <= 2e-3 * max(a_num, 1.0), (a_star, a_num)
    # and it is no worse than the grid's best value
    best = float(nqm_excess_loss(cfg, nqm_moment_step(cfg, s, a_star, momentum)))
    assert best <= values.min() * (1 + 1e-5)


def test_sgd_final_loss_matches_the_recursion():
    cfg = _cfg()
    lrs = jnp.geomspace(1.5, 0.01, 300)
    fast = float(ns.sgd_final_loss(cfg, lrs))
    slow = float(nqm_expected_loss(cfg, lrs)[-1])
    assert fast == pytest.approx(slow, rel=1e-4)


def test_greedy_is_horizon_optimal_in_one_dimension():
    # Wu et al. 2018 Thm. 1: for a univariate NQM the greedy schedule is optimal; gradient
    # descent on the exact loss (one rate per step) must reach, but not beat, its final loss.
    cfg = nqm_config(dim=1, min_curvature=0.5, max_curvature=0.5, noise_scale=0.2,
                     init_mean=2.0)
    greedy = float(ns.greedy_schedule(cfg, 30)[1][-1])
    opt = jax.jit(lambda c: ns.horizon_optimal_schedule(c, 30, num_knots=None, steps=400,
                                                        learning_rate=0.1))(cfg)
    found = float(opt.losses[-1])
    assert found >= greedy * (1 - 1e-4)
    assert found <= greedy * 1.02


@pytest.mark.slow
def test_noise_makes_greedy_suboptimal_and_not_without():
    # many curvatures: with noise greedy ends clearly above the horizon optimum; without noise
    # it is within a few percent of it (or better, the optimizer being inexact)
    for noise, bound in ((1.0, None), (0.0, 1.05)):
        cfg = nqm_config(dim=20, noise_scale=noise)
        greedy = float(ns.greedy_schedule(cfg, 100)[1][-1])
        opt = jax.jit(lambda c: ns.horizon_optimal_schedule(c, 100, num_knots=8,
                                                            steps=150))(cfg)
        ratio = greedy / float(opt.losses[-1])
        if bound is None:
            assert ratio > 2.0, ratio
        else:
            assert ratio < bound, ratio


def test_exact_bilevel_hypergradient_matches_finite_differences():
    cfg = _cfg(dim=8)
    horizon = 15
    theta = {"log_lr": jnp.float32(np.log(0.5)), "log_K": jnp.float32(np.log(10.0)),
             "beta": jnp.float32(0.7)}
    bl = ns.nqm_schedule_bilevel(cfg, schedules.rate("inverse_power"), horizon=horizon,
                                 momentum=0.9)
    est = hg.rmd(bl, horizon=horizon)
    grad, _, metrics = jax.jit(est.estimate)(jax.random.key(0), theta, est.init(None, theta))
    final = float(nqm_expected_loss(cfg, schedules.rates(theta, "inverse_power", horizon),
                                    0.9)[-1])
    assert float(metrics["meta_loss"]) == pytest.approx(final, rel=1e-5)

    # float64 central differences of the closed form, in numpy
    h = np.asarray(cfg.curvature, np.float64)
    s2 = np.asarray(cfg.noise_var, np.float64)

    def loss(th):
        a0, k0, beta = np.exp(th[0]), np.exp(th[1]), th[2]
        m, w, p, q, r = (np.ones_like(h), np.zeros_like(h), np.full_like(h, 0.09),
                         np.zeros_like(h), np.zeros_like(h))
        for k in range(horizon):
            a = a0 * (1 + k / k0) ** (-beta)
            a11, a12, a21, a22, b1, b2 = 1 - a * h, -a * 0.9, h, 0.9, a * h, -h
            m, w, p, q, r = (a11 * m + a12 * w, a21 * m + a22 * w,
                             a11**2 * p + 2 * a11 * a12 * q + a12**2 * r + s2 * b1**2,
                             a11 * a21 * p + (a11 * a22 + a12 * a21) * q + a12 * a22 * r
                             + s2 * b1 * b2,
                             a21**2 * p + 2 * a21 * a22 * q + a22**2 * r + s2 * b2**2)
        return 0.5 * np.sum(h * (m * m + p))

    x = np.array([np.log(0.5), np.log(10.0), 0.7])
    assert loss(x) == pytest.approx(final, rel=1e-4)
    for i, name in enumerate(("log_lr", "log_K", "beta")):
        e = np.zeros(3)
        e[i] = 1e-6
        fd = (loss(x + e) - loss(x - e)) / 2e-6
        assert float(grad[name]) == pytest.approx(fd, rel=2e-3, abs=1e-6), name
