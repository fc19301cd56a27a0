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
from metaopt.inner import StepOut, map_problem, truncation

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


@pytest.mark.parametrize("meta_loss", ["valid", "last"])
def test_remat_gives_the_same_gradient(meta_loss):
    """Every rematerialization (stored activations, per-step recompute, saved matmuls,
    chunks) gives the exact gradient and meta-loss of the closed form."""
    with jax.enable_x64(True):
        prob = Q.problem(Q.fixed_task(), HORIZON)
        exact = jax.value_and_grad(lambda a: Q.objective(jnp.full(HORIZON, a), meta_loss,
                                                         HORIZON, HORIZON))(LOG_LR)
        options = [dict(remat="none"), dict(), dict(remat="step_dots"),
                   dict(checkpoint_every=4, remat="none"), dict(checkpoint_every=4)]
        for kw in options:
            est = E.full_backprop(prob, num_tasks=2, meta_loss=meta_loss, **kw)
            grad, _, metrics = _estimate(est, _theta())
            np.testing.assert_allclose(float(metrics["meta_loss"]), float(exact[0]), rtol=1e-12)
            np.testing.assert_allclose(float(grad["log_lr"]), float(exact[1]), rtol=1e-12)


def test_full_backprop_options_are_validated():
    prob = Q.problem(Q.fixed_task(), HORIZON)
    with pytest.raises(ValueError, match="remat: unknown value 'block'; allowed values are"):
        E.full_backprop(prob, num_tasks=2, remat="block")
    with pytest.raises(ValueError, match="checkpoint_every: must divide horizon=20, got 3"):
        E.full_backprop(prob, num_tasks=2, checkpoint_every=3)


@pytest.mark.parametrize("checkpoint_every,meta_loss", [(None, "train"), (1, "valid"),
                                                         (5, "last")])
def test_full_backprop_task_groups_give_the_one_vmap_gradient(checkpoint_every, meta_loss):
    """Tasks mapped in 2 slices per step (the CPU default for even batches): the gradient
    and meta-loss of one ``vmap`` (float64, random tasks: a slice paired with another
    slice's keys or states would change both)."""
    with jax.enable_x64(True):
        prob = Q.problem(Q.diag_family(), HORIZON)
        one, two = (E.full_backprop(prob, num_tasks=4, checkpoint_every=checkpoint_every,
                                    meta_loss=meta_loss, task_groups=g) for g in (1, 2))
        (g1, _, m1), (g2, _, m2) = (_estimate(e, _theta(), key=3) for e in (one, two))
        np.testing.assert_allclose(float(g2["log_lr"]), float(g1["log_lr"]), rtol=1e-12)
        np.testing.assert_allclose(float(m2["meta_loss"]), float(m1["meta_loss"]), rtol=1e-12)
        with pytest.raises(ValueError, match="task_groups: must divide num_tasks=4, got 3"):
            E.full_backprop(prob, num_tasks=4, task_groups=3)


def _context_problem():
    """``w' = w - exp(a) c (w - t)`` on random targets ``t`` and curvatures ``c``, with the
    per-episode context ``exp(a) c`` (``c`` drawn with the task)."""
    def init(key, alpha):
        kc, kt = jax.random.split(key)
        cfg = {"c": 0.05 + 0.1 * jax.random.uniform(kc, (3,), jnp.float64),
               "t": jax.random.normal(kt, (3,), jnp.float64)}
        return cfg, jnp.zeros(3, jnp.float64)

    return map_problem(
        init=init, batch=lambda key, cfg: cfg,
        phi=lambda w, ctx, b: w - ctx * (w - b["t"]),
        val_loss=lambda w, ctx, b: 0.5 * jnp.sum((w - b["t"]) ** 2),
        context=lambda alpha, cfg: jnp.exp(alpha["a"]) * cfg["c"],
        schedule=truncation.constant(HORIZON))


def test_full_backprop_through_a_context_matches_finite_differences():
    """The per-task context path (gradients w.r.t. the episodes' contexts, pulled back once)
    against central differences of its own meta-loss; two task slices give the same values
    (each task's context must meet its own state: targets and curvatures differ per task)."""
    with jax.enable_x64(True):
        one, two = (E.full_backprop(_context_problem(), num_tasks=4, task_groups=g,
                                    checkpoint_every=4) for g in (1, 2))
        theta = lambda a: {"a": jnp.asarray(a, jnp.float64)}
        grad, _, metrics = _estimate(one, theta(0.3), key=5)
        h = 1e-6
        loss_at = lambda a: float(_estimate(one, theta(a), key=5)[2]["meta_loss"])
        fd = (loss_at(0.3 + h) - loss_at(0.3 - h)) / (2 * h)
        np.testing.assert_allclose(float(grad["a"]), fd, rtol=1e-7)
        assert abs(fd) > 1e-3
        grad2, _, metrics2 = _estimate(two, theta(0.3), key=5)
        np.testing.assert_allclose(float(grad2["a"]), float(grad["a"]), rtol=1e-12)
        np.testing.assert_allclose(float(metrics2["meta_loss"]), float(metrics["meta_loss"]),
                                   rtol=1e-12)


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
