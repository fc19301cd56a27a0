"""Conformance of every registered learned optimizer as an optax transformation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from lopt_testutil import NEEDS_LOSS, CompileCounter, extra_args, finite

from metaopt import lopt

NAMES = lopt.names()


def _params():
    rng = np.random.default_rng(0)  # numpy, not eager jax.random: nothing to compile
    return {"dense": {"kernel": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
                      "bias": jnp.zeros((3,))},
            "scale": jnp.ones(()),
            "conv": jnp.asarray(0.1 * rng.normal(size=(3, 3, 2, 4)), jnp.float32)}


def _grads(seed, params):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)


def _avals(tree):
    return [(x.shape, x.dtype, getattr(x, "weak_type", False)) for x in jax.tree.leaves(tree)]


def test_registry_lists_everything_and_rejects_unknown():
    assert set(NAMES) >= {"sgd", "momentum", "adam", "mlp_small", "mlp", "lstm", "hierarchical"}
    with pytest.raises(ValueError, match="allowed values.*'adam'"):
        lopt.make("adamw_typo")


@pytest.mark.parametrize("name", NAMES)
def test_conformance(name, tmp_path):
    """jit, finite updates, state kept, no retrace, optax.chain, orbax round trip."""
    lo = lopt.make(name)
    assert lo.name == name
    theta = lo.init(jax.random.PRNGKey(1))
    assert theta and all(x.dtype == jnp.float32 for x in jax.tree.leaves(theta))
    bare = lo.optimizer(theta)
    assert isinstance(bare, optax.GradientTransformationExtraArgs)
    # Composed as a user would; extra args go to the chain's update, which forwards them to
    # every member that takes extra args (clip and weight decay ignore them).
    opt = optax.chain(optax.clip_by_global_norm(1.0), bare, optax.add_decayed_weights(1e-4))
    params = _params()
    state = opt.init(params)
    assert jax.tree.structure(state[1]) == jax.tree.structure(bare.init(params))
    traces = []

    @jax.jit
    def step(g, s, p, loss):
        traces.append(1)
        return opt.update(g, s, p, loss=loss, iteration=jnp.int32(3), num_steps=jnp.int32(50),
                          unrelated_extra_arg=3)  # unknown extra args are ignored

    u1, s1 = step(_grads((2), params), state, params, 1.5)
    g2 = _grads((3), params)
    with CompileCounter() as compiles:
        u2, s2 = step(g2, s1, params, 1.2)
    assert len(traces) == 1, "retraced on the second call"
    assert compiles.count == 0, "recompiled on the second call"
    for u in (u1, u2):
        assert jax.tree.structure(u) == jax.tree.structure(params)
        assert _avals(u) == _avals(params)
        assert finite(u) and any(float(jnp.max(jnp.abs(x))) > 0 for x in jax.tree.leaves(u))
    assert jax.tree.structure(s2) == jax.tree.structure(state)
    assert _avals(s2) == _avals(state)
    assert finite(s2)

    # Orbax round trip of the state, bitwise; the restored state gives the same next update.
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(tmp_path / "state", s2)
    ckptr.wait_until_finished()
    restored = ckptr.restore(tmp_path / "state", jax.tree.map(ocp.utils.to_shape_dtype_struct, s2))
    assert jax.tree.structure(restored) == jax.tree.structure(s2)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(s2), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    g4 = _grads((4), params)
    u3, _ = step(g4, restored, params, 1.0)
    u3_ref, _ = step(g4, s2, params, 1.0)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(u3), jax.tree.leaves(u3_ref)))
    assert len(traces) == 1


@pytest.mark.parametrize("name", NEEDS_LOSS)
def test_missing_loss_raises_naming_it(name):
    lo = lopt.make(name)
    opt = lo.optimizer(lo.init(jax.random.PRNGKey(0)))
    params = _params()
    with pytest.raises(lopt.MissingExtraArgError, match=rf"{name}: pass loss=<training loss>"):
        opt.update(params, opt.init(params), params)


@pytest.mark.parametrize("name", ["mlp_small", "hierarchical"])
def test_missing_params_raises_naming_it(name):
    lo = lopt.make(name)
    opt = lo.optimizer(lo.init(jax.random.PRNGKey(0)))
    params = _params()
    with pytest.raises(ValueError, match="pass params="):
        opt.update(params, opt.init(params), **extra_args(name, 1.0))


@pytest.mark.parametrize("name", NAMES)
def test_bad_static_budget(name):
    lo = lopt.make(name)
    with pytest.raises(ValueError, match="num_steps"):
        lo.optimizer(lo.init(jax.random.PRNGKey(0)), num_steps=0)


def test_public_api_is_exported():
    for name in lopt.__all__:
        assert hasattr(lopt, name), name
    assert lopt.names() == tuple(dict.fromkeys(lopt.names()))  # unique, ordered
