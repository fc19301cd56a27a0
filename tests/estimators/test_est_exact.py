"""Exact estimators (full backprop, TBPTT) against float64 closed forms and finite differences.

Problem: a learnable SGD learning rate ``exp(theta["log_lr"])`` on quadratics, 20-step
episodes. Everything here runs in float64 (``jax.enable_x64``), so the tolerances are tight.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadratic_reference as Q

from metaopt import estimators as E
from metaopt.estimators import base
from metaopt.inner import StepOut

HORIZON = 20
LOG_LR = float(np.log(0.3))


def _theta(value=LOG_LR):
    return {"log_lr": jnp.asarray(value, jnp.float64)}


def _estimate(est, theta, key=0):
    key = jax.random.PRNGKey(key)
    return jax.jit(est.estimate)(key, theta, jax.jit(est.init)(key, theta))


@pytest.mark.parametrize("meta_loss", ["train", "valid", "last", "log_train"])
def test_full_backprop_matches_closed_form_and_central_differences(meta_loss):
    with jax.enable_x64(True):
        est = E.full_backprop(Q.problem(Q.fixed_task(), HORIZON), num_tasks=2,
                              meta_loss=meta_loss)
        grad, _, metrics = _estimate(est, _theta())

        def closed_form(a):
            return Q.objective(jnp.full(HORIZON, a), meta_loss, HORIZON, HORIZON)

        exact = jax.grad(closed_form)(jnp.float64(LOG_LR))
        h = 1e-5
        fd = (closed_form(LOG_LR + h) - closed_form(LOG_LR - h)) / (2 * h)
        # the estimator's own meta-loss, differenced
        loss_at = lambda a: float(_estimate(est, _theta(a))[2]["meta_loss"])
        fd_own = (loss_at(LOG_LR + h) - loss_at(LOG_LR - h)) / (2 * h)

        np.testing.assert_allclose(float(metrics["meta_loss"]), float(closed_form(LOG_LR)),
                                   rtol=1e-12)
        np.testing.assert_allclose(float(grad["log_lr"]), float(fd), rtol=1e-7)
        np.testing.assert_allclose(float(grad["log_lr"]), float(fd_own), rtol=1e-7)
        np.testing.assert_allclose(float(grad["log_lr"]), float(exact), rtol=1e-12)


def test_full_backprop_on_random_family_with_remat_matches_finite_differences():
    """Random tasks (the same key gives the same tasks), remat'ed chunks of 5 steps."""
    with jax.enable_x64(True):
        est = E.full_backprop(Q.problem(Q.diag_family(), HORIZON), num_tasks=4,
                              checkpoint_every=5)
        grad, _, metrics = _estimate(est, _theta(), key=3)
        h = 1e-5
        loss_at = lambda a: float(_estimate(est, _theta(a), key=3)[2]["meta_loss"])
        fd = (loss_at(LOG_LR + h) - loss_at(LOG_LR - h)) / (2 * h)
        np.testing.assert_allclose(float(grad["log_lr"]), fd, rtol=1e-7)


def test_remat_gives_the_same_gradient():
    with jax.enable_x64(True):
        prob = Q.problem(Q.fixed_task(), HORIZON)
        plain = _estimate(E.full_backprop(prob, num_tasks=2), _theta())[0]["log_lr"]
        remat = _estimate(E.full_backprop(prob, num_tasks=2, checkpoint_every=4), _theta())
        np.testing.assert_allclose(float(remat[0]["log_lr"]), float(plain), rtol=1e-12)


@pytest.mark.parametrize("meta_loss", ["valid", "last"])
def test_tbptt_is_the_diagonal_of_the_truncation_jacobian(meta_loss):
    """TBPTT's k-th estimate is dL_k/dtheta_k with the incoming state held fixed."""
    trunc, k = 5, HORIZON // 5
    with jax.enable_x64(True):
        est = E.truncated_backprop(Q.problem(Q.fixed_task(), HORIZON), num_tasks=1,
                                   unroll_length=trunc, meta_loss=meta_loss, stagger="none")
        theta = _theta()
        state = est.init(jax.random.PRNGKey(0), theta)
        step = jax.jit(est.estimate)
        grads = []
        for key in jax.random.split(jax.random.PRNGKey(1), k):
            g, state, _ = step(key, theta, state)
            grads.append(float(g["log_lr"]))

        def per_trunc(log_lrs):  # [k] per-truncation log-lrs -> [k] losses
            return Q.truncation_losses(jnp.repeat(log_lrs, trunc), meta_loss, trunc, HORIZON)

        jac = jax.jacobian(per_trunc)(jnp.full(k, LOG_LR))
        np.testing.assert_allclose(grads, np.diag(jac), rtol=1e-10)
        # and it is biased: the full gradient also has the off-diagonal (earlier-truncation)
        # terms, which are large here
        full = float(jnp.sum(jac))
        assert abs(sum(grads) - full) > 0.2 * abs(full)


def test_tbptt_over_one_whole_episode_equals_full_backprop():
    with jax.enable_x64(True):
        prob = Q.problem(Q.fixed_task(), HORIZON)
        tb = E.truncated_backprop(prob, num_tasks=2, unroll_length=HORIZON, stagger="none")
        full = E.full_backprop(prob, num_tasks=2)
        g_tb = _estimate(tb, _theta())[0]["log_lr"]
        g_full = _estimate(full, _theta())[0]["log_lr"]
        np.testing.assert_allclose(float(g_tb), float(g_full), rtol=1e-12)


def test_log_train_meta_loss_floors_losses_at_1e_minus_6():
    z = jnp.zeros(3, bool)
    out = StepOut(loss=jnp.asarray([2.0, 1e-9, 0.0]), meta_loss=jnp.zeros(3),
                  iteration=jnp.zeros(3, jnp.int32), done=z, nonfinite=z)
    np.testing.assert_allclose(np.asarray(base.step_values(out, "log_train")),
                               np.log([2.0, 1e-6, 1e-6]), rtol=1e-6)
