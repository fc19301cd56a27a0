"""least_squares family: f = ||W theta - y||^2 with standard-normal W, y (Andrychowicz 2016)."""

import jax
import numpy as np
import optax
import pytest

import metaopt
from metaopt.tasks import least_squares_family, make


def test_sgd_unroll_matches_float64_closed_form():
    # grad f = 2 W^T (W theta - y): SGD is theta_{t+1} = theta_t - eta 2 W^T (W theta_t - y).
    fam = least_squares_family(dim=4, num_rows=6, init_scale=0.5)
    eta, steps = 0.01, 25
    problem = metaopt.inner_problem(fam, optax.sgd(eta), valid=False,
                                    schedule=metaopt.truncation.constant(1000))
    state = jax.jit(problem.init)(jax.random.key(0), None)
    end, out = jax.jit(problem.unroll, static_argnums=3)(jax.random.key(1), None, state, steps)
    w, y = (np.asarray(a, np.float64) for a in (state.cfg.w, state.cfg.y))
    assert w.shape == (6, 4) and y.shape == (6,)
    theta, losses = np.asarray(state.params, np.float64), []
    for _ in range(steps):
        r = w @ theta - y
        losses.append(r @ r)
        theta = theta - eta * 2 * w.T @ r
    np.testing.assert_allclose(out.loss, losses, rtol=2e-5)
    np.testing.assert_allclose(end.params, theta, rtol=0, atol=2e-5)


def test_entries_are_standard_normal_and_init_scale_is_used():
    assert make("least_squares").sample(jax.random.key(1)).w.shape == (10, 10)  # the paper's
    fam = least_squares_family(dim=100, num_rows=120)
    cfg = fam.sample(jax.random.key(2))
    entries = np.concatenate([np.ravel(cfg.w), np.ravel(cfg.y)])  # 12,120 draws
    assert cfg.w.shape == (120, 100) and cfg.y.shape == (120,)
    assert abs(entries.mean()) < 0.04 and abs(entries.std() - 1.0) < 0.04
    theta = fam.task(cfg).init(jax.random.key(3))
    assert theta.shape == (100,) and abs(float(np.std(theta)) - 0.01) < 0.003


def test_least_squares_bad_input():
    with pytest.raises(ValueError, match=r"num_rows: must be a positive integer"):
        least_squares_family(num_rows=0)
    with pytest.raises(ValueError, match=r"init_scale: must be a positive number"):
        least_squares_family(init_scale=-1.0)
