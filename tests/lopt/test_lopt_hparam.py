"""Learnable SGD / momentum / Adam against optax, schedules, and float64 finite differences."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lopt_testutil import cast, tiny_task

import metaopt
from metaopt import lopt
from metaopt.lopt import schedules


def _problem():
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    a = jax.random.normal(k1, (64, 20))
    y = jax.random.normal(k2, (64, 5))
    params = {"w": jax.random.normal(k3, (20, 5)), "b": jnp.zeros((5,))}

    def loss(p):
        return jnp.mean((a @ p["w"] + p["b"][None, :] - y) ** 2)

    return params, loss


def _trajectory(opt, steps: int):
    params, loss = _problem()

    def body(carry, _):
        p, s = carry
        u, s = opt.update(jax.grad(loss)(p), s, p)
        p = optax.apply_updates(p, u)
        return (p, s), p

    _, traj = jax.jit(lambda: jax.lax.scan(body, (params, opt.init(params)), None,
                                           length=steps))()
    return traj


@pytest.mark.parametrize("mine, ref", [
    (lopt.learnable_adam(), optax.adam(1e-3)),
    (lopt.learnable_adam(5e-3, b1=0.8, b2=0.99, eps=1e-6), optax.adam(5e-3, 0.8, 0.99, 1e-6)),
    (lopt.learnable_sgd(0.05), optax.sgd(0.05)),
    (lopt.learnable_momentum(0.02, 0.9), optax.sgd(0.02, momentum=0.9)),
    (lopt.learnable_momentum(0.02, 0.5, nesterov=True), optax.sgd(0.02, 0.5, nesterov=True)),
], ids=["adam_defaults", "adam_custom", "sgd", "momentum", "nesterov"])
def test_matches_optax_step_for_step(mine, ref):
    steps = 400
    got = _trajectory(mine.optimizer(mine.init(None)), steps)
    want = _trajectory(ref, steps)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        # Every step, every coordinate; the only difference is float32 rounding of exp/sigmoid
        # of the stored log/logit values (~1 ulp of the learning rate).
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=2e-5, atol=2e-6)


def test_theta_is_log_and_logit():
    th = lopt.learnable_adam(1e-3, b1=0.9, b2=0.999, eps=1e-8).init(None)
    assert set(th) == {"log_lr", "logit_b1", "logit_b2", "log_eps"}
    np.testing.assert_allclose(float(th["log_lr"]), math.log(1e-3), rtol=1e-6)
    np.testing.assert_allclose(float(jax.nn.sigmoid(th["logit_b2"])), 0.999, rtol=1e-6)


@pytest.mark.parametrize("field, kwargs", [
    ("learning_rate", {"learning_rate": -1.0}), ("b1", {"b1": 1.0}), ("b2", {"b2": 0.0}),
    ("eps", {"eps": 0.0}), ("schedule", {"schedule": "linear_warmup"}),
])
def test_bad_hyperparameters_name_the_field(field, kwargs):
    with pytest.raises(ValueError, match=field):
        lopt.learnable_adam(**kwargs)


def test_inverse_power_schedule_uses_iteration_then_count():
    """a_k = a_0 (1 + k/K)^(-beta) with k from `iteration`, else the internal count."""
    lo = lopt.learnable_sgd(0.5, schedule="inverse_power",
                             schedule_options={"decay_steps": 10.0, "power": 0.75})
    theta = lo.init(None)
    assert set(theta) == {"log_lr", "log_K", "beta"}
    opt = lo.optimizer(theta)
    g = {"x": jnp.ones((3,))}
    state = opt.init(g)

    def rate(k):
        return 0.5 * (1 + k / 10.0) ** -0.75

    u, _ = opt.update(g, state, g, iteration=jnp.int32(30))
    np.testing.assert_allclose(np.asarray(u["x"]), -rate(30), rtol=1e-5)
    for k in range(3):  # no iteration given: internal count 0, 1, 2
        u, state = opt.update(g, state, g)
        np.testing.assert_allclose(np.asarray(u["x"]), -rate(k), rtol=1e-5)


def test_schedule_factors():
    k, t = jnp.float32(50.0), jnp.float32(100.0)
    cos = schedules.cosine(floor=0.1)
    np.testing.assert_allclose(float(cos.factor(cos.init(), k, t)), 0.1 + 0.9 * 0.5, rtol=1e-5)
    np.testing.assert_allclose(float(cos.factor(cos.init(), t, t)), 0.1, rtol=1e-5)
    ex = schedules.exponential(time_scale=25.0)
    np.testing.assert_allclose(float(ex.factor(ex.init(), k, t)), math.exp(-2.0), rtol=1e-5)
    pw = schedules.piecewise(num_knots=3)
    th = {"log_factors": jnp.log(jnp.asarray([1.0, 0.5, 0.25]))}
    np.testing.assert_allclose(float(pw.factor(th, jnp.float32(25.0), t)),
                               math.sqrt(0.5), rtol=1e-5)  # log-linear between knots
    with pytest.raises(ValueError, match="allowed values"):
        schedules.get("step_decay")


def _meta_loss_fn(task, lo, theta, steps=6):
    problem = metaopt.inner_problem(task, lambda th: lo.optimizer(th, num_steps=20),
                                    schedule=metaopt.truncation.constant(20))
    state = jax.jit(problem.init)(jax.random.PRNGKey(1), theta)

    def meta_loss(theta):
        _, out = problem.unroll(jax.random.PRNGKey(2), theta, state, steps)
        return jnp.mean(out.meta_loss)

    return meta_loss


#: Fourth-order central differences in float64, ``(8 (f(h) - f(-h)) - (f(2h) - f(-2h))) / 12h``
#: at h = 1e-2: the fields' derivatives span 7e-6 (logit_b2) to 0.2 (log_lr), and for the
#: small ones the rounding error of the meta-loss (~30 ulp) over 2h exceeds 1e-6 relative for
#: h <= 1e-4, while second-order differences at h = 1e-3 still carry ~1e-6 truncation error.
#: Measured |AD - FD| / |FD| <= 2.2e-8 for every field below.
FD_STEP, FD_RTOL = 1e-2, 1e-6


def _check_fd(lo, fields):
    """d(meta-loss)/d(theta[field]) by backprop vs finite differences, float64 throughout."""
    with jax.enable_x64(True):
        theta = cast(lo.init(None), jnp.float64)
        value_and_grad = jax.jit(jax.value_and_grad(
            _meta_loss_fn(tiny_task(jnp.float64), lo, theta)))  # one compile
        grad = value_and_grad(theta)[1]
        for field in fields:
            def at(delta, field=field):
                return float(value_and_grad({**theta, field: theta[field] + delta})[0])

            h = FD_STEP
            fd = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h)
            assert grad[field].dtype == jnp.float64, field
            assert abs(fd) > 1e-6, field  # not vacuous (the smallest, logit_b2: 6.5e-6)
            np.testing.assert_allclose(float(grad[field]), fd, rtol=FD_RTOL, err_msg=field)


def test_hypergradients_match_finite_differences():
    """Every metaparameter of momentum + inverse-power schedule, through the inner problem."""
    _check_fd(lopt.make("momentum_inverse_power"), ["log_lr", "logit_momentum", "log_K", "beta"])


@pytest.mark.slow
@pytest.mark.parametrize("lo", [
    lopt.learnable_sgd(0.2, schedule="cosine"),
    # eps = 1e-3, near sqrt(v) here, so that log_eps has a measurable effect (at 1e-8 its
    # derivative is ~1e-9, below what differences of a ~0.5 meta-loss resolve)
    lopt.learnable_adam(0.05, eps=1e-3),
], ids=["sgd_cosine", "adam"])
def test_hypergradients_match_finite_differences_more(lo):
    _check_fd(lo, [k for k in lo.init(None)])
