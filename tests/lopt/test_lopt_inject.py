"""``optax.inject_hyperparams(lo.optimizer)``: the step budget as an injected hyperparameter.

What optax does with ``optimizer(theta, *, num_steps)``: ``num_steps`` (an int) becomes an
int32 entry of ``state.hyperparams`` (editable between updates); ``theta`` (a dict: neither a
number nor a callable) is passed through unchanged to every ``optimizer(...)`` call -- not a
hyperparameter, not stored in the state, not cast to the parameters' dtype.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lopt_testutil import CompileCounter

from metaopt import lopt

NAMES = lopt.names()


def _params():
    rng = np.random.default_rng(0)
    return {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32), "b": jnp.zeros((3,))}


def _grads(seed):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), _params())


def _extra(k):
    return {"loss": jnp.float32(1.5), "valid_loss": jnp.float32(1.7), "iteration": jnp.int32(k)}


def _assert_close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_matches_plain(name):
    """Same update and inner state as ``lo.optimizer(theta, num_steps=...)``, under jit, at
    ``iteration`` 14 of the budget 40."""
    lo = lopt.make(name)
    theta = lo.init(jax.random.PRNGKey(0))
    injected = optax.inject_hyperparams(lo.optimizer)(theta, num_steps=40)
    plain = lo.optimizer(theta, num_steps=40)
    params = _params()
    state = injected.init(params)
    assert set(state.hyperparams) == {"num_steps"}  # theta is passed through, not injected
    assert state.hyperparams["num_steps"].dtype == jnp.int32
    assert int(state.hyperparams["num_steps"]) == 40

    both = jax.jit(lambda si, sp: (injected.update(_grads(2), si, params, **_extra(14)),
                                   plain.update(_grads(2), sp, params, **_extra(14))))
    (u_inj, s_inj), (u_plain, s_plain) = both(state, state.inner_state)
    _assert_close(u_inj, u_plain)
    assert any(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(u_plain))
    _assert_close(s_inj.inner_state, s_plain)
    assert int(s_inj.hyperparams["num_steps"]) == 40


def test_theta_stays_differentiable_through_inject_hyperparams():
    """theta is passed through by optax, so meta-gradients flow through the wrapper too."""
    lo = lopt.learnable_adam(0.05, schedule="cosine")
    params, grads = _params(), _grads(1)

    def total_update(theta, wrap):
        opt = wrap(lo.optimizer)(theta, num_steps=30)
        u, _ = opt.update(grads, opt.init(params), params, iteration=jnp.int32(9))
        return sum(jnp.sum(x) for x in jax.tree.leaves(u))

    theta = lo.init(None)
    got, want = jax.jit(lambda th: (jax.grad(total_update)(th, optax.inject_hyperparams),
                                    jax.grad(total_update)(th, lambda f: f)))(theta)
    assert set(got) == set(theta) and all(float(jnp.abs(got[k])) > 0 for k in
                                            ("log_lr", "logit_floor"))
    _assert_close(got, want)


@pytest.mark.parametrize("lo, reads_budget", [
    (lopt.make("mlp_small"), True),  # step embedding of k / T
    (lopt.learnable_sgd(0.1, schedule="cosine"), True),  # cosine over the budget T
    (lopt.make("momentum_inverse_power"), False),  # (1 + k/K)^(-beta): no T
], ids=["mlp_small", "sgd_cosine", "momentum_inverse_power"])
def test_editing_the_injected_budget(lo, reads_budget):
    """Setting ``state.hyperparams["num_steps"]`` (as optax documents) gives exactly the update
    of ``lo.optimizer(theta, num_steps=new)``, without recompiling the jitted step."""
    theta = lo.init(jax.random.PRNGKey(0))
    injected = optax.inject_hyperparams(lo.optimizer)(theta, num_steps=50)
    params, grads = _params(), _grads(1)
    step = jax.jit(lambda s: injected.update(grads, s, params, **_extra(10)))
    state = injected.init(params)
    u50, _ = step(state)
    state.hyperparams["num_steps"] = 200  # a Python int: the same (weak int32) signature
    with CompileCounter() as compiles:
        u200, after = step(state)
    assert compiles.count == 0, "editing num_steps recompiled the step"
    assert int(after.hyperparams["num_steps"]) == 200
    ref200, _ = jax.jit(lambda s: lo.optimizer(theta, num_steps=200).update(
        grads, s, params, **_extra(10)))(state.inner_state)
    _assert_close(u200, ref200)
    changed = not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(u50),
                                                           jax.tree.leaves(u200)))
    assert changed == reads_budget


def test_num_steps_accepts_int_arrays_and_rejects_the_rest():
    lo = lopt.learnable_sgd(0.1, schedule="cosine")
    theta = lo.init(None)
    for good in (7, np.int64(7), np.asarray(7), jnp.int32(7), jnp.asarray(7, jnp.int16)):
        lo.optimizer(theta, num_steps=good)
    for bad in (True, np.bool_(True), 0, -3, np.int64(0), 7.0, "100", None, jnp.float32(7),
                jnp.asarray([7, 8]), jnp.int32(0)):
        with pytest.raises(ValueError, match="sgd_cosine: num_steps must be a positive int"):
            lo.optimizer(theta, num_steps=bad)

    g = {"x": jnp.ones(())}

    def update(t):
        opt = lo.optimizer(theta, num_steps=t)
        return opt.update(g, opt.init(g), iteration=jnp.int32(3))[0]["x"]

    # a traced budget cannot be checked: it is used as given, clamped to >= 1 (as the extra arg)
    traced = jax.jit(update)
    np.testing.assert_allclose(traced(jnp.int32(7)), update(7), rtol=1e-6)
    np.testing.assert_allclose(traced(jnp.int32(0)), update(1), rtol=1e-6)
    assert not np.allclose(update(7), update(1))
