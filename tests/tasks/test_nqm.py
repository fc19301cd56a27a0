"""The NQM's closed-form expected loss against exact formulas and Monte Carlo runs of the Task."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt.tasks import nqm_config, nqm_expected_loss, nqm_task
from metaopt.tasks.nqm import noise_floor

RUNS = 16384  # Monte Carlo runs; the standard error of a mean loss is ~0.7% of it
T = 40


def _cfg():
    # Curvatures over 1.5 decades, sigma^2 = 0.5 h, random init: every term of the
    # recursion (init variance, alpha^2 h^2 sigma^2, momentum cross terms) matters.
    return nqm_config(dim=8, min_curvature=0.03, max_curvature=1.0, noise_scale=0.5,
                      init_mean=1.0, init_std=0.5)


@jax.jit
def _excess_losses(cfg, lrs, momentum, key):
    """Excess loss 1/2 sum h theta_t^2, t = 0..T, of RUNS independent optax runs: [RUNS, T+1]."""
    task = nqm_task(cfg)
    opt = optax.sgd(lambda count: lrs[count], momentum=momentum)  # momentum 0: plain SGD

    def run(key):
        k_init, k_steps = jax.random.split(key)
        theta = task.init(k_init)

        def step(carry, k):
            theta, s = carry
            g = jax.grad(task.loss)(theta, task.batch(k, "train"))
            u, s = opt.update(g, s, theta)
            return (optax.apply_updates(theta, u), s), theta

        (last, _), thetas = jax.lax.scan(step, (theta, opt.init(theta)),
                                         jax.random.split(k_steps, lrs.shape[0]))
        thetas = jnp.concatenate([thetas, last[None]])
        return 0.5 * jnp.sum(cfg.curvature[None] * thetas**2, axis=-1)

    return jax.vmap(run)(jax.random.split(key, RUNS))


def _simulate(cfg, lrs, momentum, key):
    return np.asarray(_excess_losses(cfg, lrs, jnp.float32(momentum), key), np.float64)


def _max_z(samples, expected):
    mean = samples.mean(0)
    se = samples.std(0, ddof=1) / np.sqrt(samples.shape[0])
    return np.max(np.abs(mean - np.asarray(expected, np.float64)) / se)


def test_sgd_decaying_schedule_matches_monte_carlo():
    cfg = _cfg()
    t = jnp.arange(T, dtype=jnp.float32)
    lrs = 1.5 / (1.0 + t / 10.0) ** 0.75  # Wu et al.'s alpha_0 (1 + t/K)^-beta
    expected = nqm_expected_loss(cfg, lrs)
    assert expected.shape == (T + 1,)
    assert _max_z(_simulate(cfg, lrs, 0.0, jax.random.key(0)), expected) < 5.0


def test_momentum_matches_monte_carlo():
    cfg = _cfg()
    lrs = jnp.full((T,), 0.3)
    samples = _simulate(cfg, lrs, 0.9, jax.random.key(1))
    assert _max_z(samples, nqm_expected_loss(cfg, lrs, momentum=0.9)) < 5.0
    # The test has power: the SGD trajectory is many standard errors away.
    assert _max_z(samples, nqm_expected_loss(cfg, lrs)) > 20.0


def test_inner_problem_training_loss_matches_closed_form_with_noise():
    """The inner problem's reported L_t = L(theta_t; c_t) has mean E[L(theta_t)] + noise floor."""
    cfg = _cfg()
    lrs = jnp.full((T,), 0.5)
    problem = metaopt.inner_problem(
        nqm_task(cfg), optax.sgd(lambda c: lrs[c], momentum=0.5),
        schedule=metaopt.truncation.constant(T + 1), valid=False)
    k_init, k_run = jax.random.split(jax.random.key(2))
    runs = 4096
    states = problem.init_batch(k_init, None, runs)
    _, out = jax.jit(problem.unroll_batch, static_argnums=3)(
        jax.random.split(k_run, runs), None, states, T)
    assert not bool(jnp.any(out.done))
    expected = nqm_expected_loss(cfg, lrs, momentum=0.5, include_noise=True)[:T]
    assert _max_z(np.asarray(out.loss, np.float64), expected) < 5.0


def test_noiseless_sgd_is_geometric():
    cfg = nqm_config(dim=5, min_curvature=0.1, max_curvature=1.0, noise_scale=0.0, init_mean=2.0)
    alpha, steps = 0.7, 12
    got = nqm_expected_loss(cfg, jnp.full((steps,), alpha))
    h = np.asarray(cfg.curvature, np.float64)
    t = np.arange(steps + 1)[:, None]
    want = 0.5 * np.sum(h * (1 - alpha * h) ** (2 * t) * 4.0, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_one_step_value_and_gradient_match_formula():
    """T = 1: E L_1 = 1/2 sum h ((1 - a h)^2 (m^2 + v) + a^2 h^2 s2); d/da in closed form."""
    cfg = nqm_config(dim=4, min_curvature=0.2, max_curvature=2.0, noise_scale=0.3,
                     init_mean=-1.0, init_std=0.4)
    h, s2 = np.asarray(cfg.curvature, np.float64), np.asarray(cfg.noise_var, np.float64)
    mv = 1.0 + 0.16
    a = 0.37
    f = jax.jit(lambda lr: nqm_expected_loss(cfg, lr[None], momentum=0.9)[-1])
    want = 0.5 * np.sum(h * ((1 - a * h) ** 2 * mv + a**2 * h**2 * s2))
    dwant = 0.5 * np.sum(h * (-2 * h * (1 - a * h) * mv + 2 * a * h**2 * s2))
    np.testing.assert_allclose(f(jnp.float32(a)), want, rtol=1e-5)
    np.testing.assert_allclose(jax.grad(f)(jnp.float32(a)), dwant, rtol=1e-4)
    np.testing.assert_allclose(nqm_expected_loss(cfg, jnp.array([a]), include_noise=True)[-1],
                               want + float(noise_floor(cfg)), rtol=1e-5)


def test_task_metrics_are_exact_expectations():
    cfg = _cfg()
    task = nqm_task(cfg)
    theta = jnp.linspace(-1.0, 1.0, 8)
    b = jax.vmap(lambda k: task.batch(k, "valid"))(jax.random.split(jax.random.key(3), 20000))
    losses = np.asarray(jax.vmap(task.loss, (None, 0))(theta, b), np.float64)
    m = task.metrics(theta, None)
    se = losses.std() / np.sqrt(losses.size)
    assert abs(losses.mean() - float(m["expected_loss"])) < 4 * se
    np.testing.assert_allclose(m["excess_loss"], 0.5 * np.sum(cfg.curvature * theta**2), rtol=1e-6)


def test_nqm_bad_input():
    with pytest.raises(ValueError, match=r"dim: must be a positive integer \(>= 1\)"):
        nqm_config(dim=0)
    with pytest.raises(ValueError, match=r"min_curvature: 2.0 must not exceed max_curvature"):
        nqm_config(min_curvature=2.0, max_curvature=1.0)
    with pytest.raises(ValueError, match=r"noise_scale: must be a number in \[0.0, inf\]"):
        nqm_config(noise_scale=-1.0)
    with pytest.raises(ValueError, match=r"learning_rates: must have shape \[T\]"):
        nqm_expected_loss(_cfg(), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"split: unknown split 'dev'; allowed values are"):
        nqm_task(_cfg()).batch(jax.random.key(0), "dev")
