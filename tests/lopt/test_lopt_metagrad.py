"""Meta-gradients: d(mean meta-loss of a short inner unroll)/d(theta), for every optimizer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lopt_testutil import finite

import metaopt
from metaopt import lopt


def _meta_loss(task, lo, episode=20, steps=6):
    problem = metaopt.inner_problem(task, lambda th: lo.optimizer(th),
                                    schedule=metaopt.truncation.constant(episode))
    state0 = jax.jit(problem.init)(jax.random.PRNGKey(1), lo.init(jax.random.PRNGKey(0)))

    def meta_loss(theta):
        _, out = problem.unroll(jax.random.PRNGKey(2), theta, state0, steps)
        return jnp.mean(out.meta_loss)

    return meta_loss


#: Through the inner problem, in the fast suite; the others run there with -m slow (each
#: compiles a scan with resets and its transpose: 5-25 s on the shared CPU).
FAST_INNER = ("sgd", "mlp_small")


@pytest.mark.parametrize("name", [
    n if n in FAST_INNER else pytest.param(n, marks=pytest.mark.slow) for n in lopt.names()])
def test_unroll_meta_gradient_is_finite(tiny, name):
    """The tiny task has an exactly-zero-initialised leaf and one with exactly zero gradient;
    the unroll crosses an episode reset (episode 4, 6 steps)."""
    lo = lopt.make(name)
    theta = lo.init(jax.random.PRNGKey(0))
    value, grad = jax.jit(jax.value_and_grad(_meta_loss(tiny, lo, episode=4)))(theta)
    assert np.isfinite(float(value))
    assert jax.tree.structure(grad) == jax.tree.structure(theta)
    assert finite(grad), f"non-finite meta-gradient for {name}"
    assert sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(grad)) > 0


@pytest.mark.parametrize("name", lopt.names())
def test_plain_unroll_meta_gradient_is_finite(name):
    """Every optimizer, in the fast suite: a user-style ``lax.scan`` of 3 updates with the
    training loss passed, a leaf at exactly zero and a leaf with exactly zero gradient."""
    lo = lopt.make(name)
    params = {"used": jnp.ones((3, 2)), "unused": jnp.zeros((4,)), "zero": jnp.zeros((2,))}

    def loss_fn(p):
        return jnp.sum((p["used"] - 0.5) ** 2) + jnp.sum(p["zero"] ** 2)

    def meta_loss(theta):
        opt = lo.optimizer(theta)

        def body(carry, _):
            p, s = carry
            loss, g = jax.value_and_grad(loss_fn)(p)
            u, s = opt.update(g, s, p, loss=loss, valid_loss=loss)
            return (optax.apply_updates(p, u), s), loss

        (p, _), losses = jax.lax.scan(body, (params, opt.init(params)), None, length=3)
        return loss_fn(p) + jnp.mean(losses)

    value, grad = jax.jit(jax.value_and_grad(meta_loss))(lo.init(jax.random.PRNGKey(0)))
    assert np.isfinite(float(value))
    assert finite(grad), f"non-finite meta-gradient for {name}"
    assert sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(grad)) > 0


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mlp_small", "hierarchical"])
def test_meta_gradient_matches_finite_differences(tiny, name):
    """Directional derivative of the meta-loss in theta, backprop vs central differences;
    ``mlp_small`` exercises the fused network whose derivative goes through its matmul form
    (also checked, fast, at the network level in test_lopt_features.py)."""
    lo = lopt.make(name)
    theta = lo.init(jax.random.PRNGKey(0))
    value_and_grad = jax.jit(jax.value_and_grad(_meta_loss(tiny, lo)))
    grad = value_and_grad(theta)[1]
    # along the normalized gradient plus 0.3 x a random unit vector (all fields at once)
    def unit(tree):
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))
        return jax.tree.map(lambda x: x / norm, tree)

    rng = np.random.default_rng(7)
    noise = unit(jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32),
                              theta))
    direction = unit(jax.tree.map(lambda a, b: a + 0.3 * b, unit(grad), noise))
    h = 1e-2

    def at(s):
        return float(value_and_grad(jax.tree.map(lambda t, d: t + s * d, theta, direction))[0])

    fd = (at(h) - at(-h)) / (2 * h)
    ad = float(sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                   jax.tree.leaves(direction))))
    assert abs(fd) > 1e-5
    np.testing.assert_allclose(ad, fd, rtol=3e-2, atol=1e-6)
