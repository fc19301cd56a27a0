"""Dtypes: learned optimizers follow the parameters' dtype (optax's convention).

float64 parameters and theta (under ``jax.enable_x64``) must give a float64 program with no
float32 value anywhere -- update, state and meta-gradient -- and float32 ones a float32
program even when x64 is on (no float64 from default dtypes). Checked on the traced program
(nothing compiled), then numerically against optax in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lopt_testutil import HAND_DESIGNED, cast, float_dtypes

from metaopt import lopt

NAMES = lopt.names()


def _params(dtype):
    return {"used": jnp.ones((3, 2), dtype), "unused": jnp.zeros((4,), dtype),
            "zero": jnp.zeros((2,), dtype)}


def _loss(p):
    return jnp.sum((p["used"] - 0.5) ** 2) + jnp.sum(p["zero"] ** 2)


def _meta_loss(lo, params):
    """Final plus mean loss of 3 updates in a user-style ``lax.scan``, with every extra arg
    (``loss``, ``valid_loss``, ``iteration``, ``num_steps``); a leaf at exactly zero and one
    with exactly zero gradient."""

    def meta_loss(theta):
        opt = lo.optimizer(theta, num_steps=10)

        def body(carry, i):
            p, s = carry
            loss, g = jax.value_and_grad(_loss)(p)
            u, s = opt.update(g, s, p, loss=loss, valid_loss=2 * loss, iteration=i,
                              num_steps=jnp.int32(10))
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), jnp.arange(3))
        return _loss(p) + jnp.mean(losses)

    return meta_loss


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_one_float_dtype_end_to_end(name, dtype):
    """The jaxpr of d(meta-loss)/d(theta) -- every update, state, feature, statistic, network
    and LSTM value, forward and backward -- holds exactly one float dtype, the parameters'."""
    lo = lopt.make(name)
    theta32 = lo.init(jax.random.PRNGKey(0))
    with jax.enable_x64(True):
        theta = cast(theta32, dtype)
        found = float_dtypes(jax.value_and_grad(_meta_loss(lo, _params(dtype))), theta)
    assert set(found) == {jnp.dtype(dtype).name}, found


def _expected_state_dtype(name, param_dtype):
    # hand-designed: exactly the parameter's dtype (as optax); networks: at least float32
    return param_dtype if name in HAND_DESIGNED else jnp.promote_types(param_dtype, jnp.float32)


@pytest.mark.parametrize("param_dtype, theta_dtype", [
    (jnp.float64, jnp.float64), (jnp.float32, jnp.float64), (jnp.float64, jnp.float32),
    (jnp.bfloat16, jnp.float32)], ids=["f64-f64", "f32-f64", "f64-f32", "bf16-f32"])
@pytest.mark.parametrize("name", NAMES)
def test_state_follows_params_for_mixed_dtypes(name, param_dtype, theta_dtype):
    """Updates come back in the parameters' dtypes; the state keeps its avals through an
    update (a valid scan carry) and has the parameters' dtype, at least float32 for the
    per-parameter networks (low-precision accumulators are useless; see base.state_dtype)."""
    lo = lopt.make(name)
    theta32 = lo.init(jax.random.PRNGKey(0))
    with jax.enable_x64(True):
        theta = cast(theta32, theta_dtype)
        params = _params(param_dtype)
        opt = lo.optimizer(theta)
        state = jax.eval_shape(opt.init, params)
        updates, new_state = jax.eval_shape(
            lambda s: opt.update(params, s, params, loss=jnp.ones((), param_dtype),
                                 valid_loss=jnp.ones((), param_dtype)), state)
    for u, p in zip(jax.tree.leaves(updates), jax.tree.leaves(params), strict=True):
        assert (u.shape, u.dtype) == (p.shape, p.dtype)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    avals = [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(state)]
    assert [(x.shape, x.dtype, x.weak_type) for x in jax.tree.leaves(new_state)] == avals
    floats = {x.dtype for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.floating)}
    assert floats <= {jnp.dtype(_expected_state_dtype(name, param_dtype))}, floats


def _logit(p):
    return math.log(p) - math.log1p(-p)


@pytest.mark.parametrize("mine, theta, ref", [
    (lopt.learnable_adam(), {"log_lr": math.log(1e-2), "logit_b1": _logit(0.9),
                             "logit_b2": _logit(0.999), "log_eps": math.log(1e-8)},
     lambda: optax.adam(1e-2)),
    (lopt.learnable_momentum(), {"log_lr": math.log(0.02), "logit_momentum": _logit(0.9)},
     lambda: optax.sgd(0.02, momentum=0.9)),
], ids=["adam", "momentum"])
def test_float64_matches_optax_in_float64(mine, theta, ref):
    """With theta given in float64 (from Python floats), 100 float64 steps agree with optax's
    float64 optimizer to ~1e-12: float32 anywhere in the update would show up as ~1e-7
    relative differences."""
    with jax.enable_x64(True):
        theta = {k: jnp.asarray(v, jnp.float64) for k, v in theta.items()}
        rng = np.random.default_rng(0)
        a = jnp.asarray(rng.normal(size=(32, 6)))
        y = jnp.asarray(rng.normal(size=(32,)))
        params = {"w": jnp.asarray(rng.normal(size=(6,))), "b": jnp.zeros(())}

        def loss(p):
            return jnp.mean((a @ p["w"] + p["b"] - y) ** 2)

        def trajectory(opt):
            def body(carry, _):
                p, s = carry
                u, s = opt.update(jax.grad(loss)(p), s, p)
                p = optax.apply_updates(p, u)
                return (p, s), p

            return jax.lax.scan(body, (params, opt.init(params)), None, length=100)[1]

        got, want = jax.jit(lambda: (trajectory(mine.optimizer(theta)), trajectory(ref())))()
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-11, atol=1e-13)
