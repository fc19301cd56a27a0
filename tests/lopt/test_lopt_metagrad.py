"""Meta-gradients: d(mean meta-loss of a short inner unroll)/d(theta), for every optimizer:
finite in float32 (exact zeros, resets), and equal to float64 finite differences."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from lopt_testutil import cast, finite, tiny_task

import metaopt
from metaopt import lopt


def _meta_loss(task, lo, episode=20, steps=6, theta=None, feed_valid_loss=False):
    """``theta -> mean meta-loss`` of ``steps`` inner steps from a fixed initial state (built
    with ``theta``, default ``lo.init(PRNGKey(0))``)."""
    problem = metaopt.inner_problem(task, lambda th: lo.optimizer(th),
                                    schedule=metaopt.truncation.constant(episode),
                                    feed_valid_loss=feed_valid_loss)
    theta = lo.init(jax.random.PRNGKey(0)) if theta is None else theta
    state0 = jax.jit(problem.init)(jax.random.PRNGKey(1), theta)

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


#: Central differences in float64: step and tolerance. At h = 1e-4 the truncation error
#: (O(h^2)) is below 1e-7 relative and the rounding error (~1e-16 |f| / h) below 1e-11;
#: measured |AD - FD| / |FD|: mlp_small 7e-12, mlp 7e-12, lstm 6e-11, hierarchical with the
#: validation loss fed 1e-8. The latter is limited by the inner problem storing the fed
#: validation loss as float32 (metaopt.inner.problem, InnerState.valid_loss): that rounding
#: is invisible to backprop and adds noise ~1e-12 / h to the difference quotient (1.5e-7 at
#: h = 1e-5); without feed_valid_loss hierarchical reaches 5e-11 at h = 1e-5.
FD_STEP, FD_RTOL = 1e-4, 1e-6


@pytest.mark.parametrize("name, feed_valid_loss", [
    ("mlp_small", False),
    pytest.param("mlp", False, marks=pytest.mark.slow),
    pytest.param("lstm", False, marks=pytest.mark.slow),
    pytest.param("hierarchical", True, marks=pytest.mark.slow),
    pytest.param("norm_mlp", False, marks=pytest.mark.slow),
])
def test_meta_gradient_matches_finite_differences(name, feed_valid_loss):
    """Directional derivative of the meta-loss of a 6-step inner unroll in float64 (task,
    params and theta): backprop vs central differences at rtol 1e-6.

    Along the normalized gradient plus 0.3 x a random unit vector (every theta leaf at once).
    ``mlp_small`` exercises the fused network whose derivative goes through its matmul form;
    ``hierarchical`` gets the validation loss as the ``valid_loss`` extra arg.
    """
    lo = lopt.make(name)
    theta32 = lo.init(jax.random.PRNGKey(0))
    with jax.enable_x64(True):
        theta = cast(theta32, jnp.float64)
        meta_loss = _meta_loss(tiny_task(jnp.float64), lo, theta=theta,
                               feed_valid_loss=feed_valid_loss)
        value_and_grad = jax.jit(jax.value_and_grad(meta_loss))  # one compile, reused below
        value, grad = value_and_grad(theta)
        assert value.dtype == jnp.float64
        assert all(g.dtype == jnp.float64 for g in jax.tree.leaves(grad))

        def unit(tree):
            norm = jnp.sqrt(sum(jnp.sum(x * x) for x in jax.tree.leaves(tree)))
            return jax.tree.map(lambda x: x / norm, tree)

        rng = np.random.default_rng(7)
        noise = unit(jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), theta))
        direction = unit(jax.tree.map(lambda a, b: a + 0.3 * b, unit(grad), noise))

        def at(s):
            return float(value_and_grad(jax.tree.map(lambda t, d: t + s * d, theta,
                                                     direction))[0])

        fd = (at(FD_STEP) - at(-FD_STEP)) / (2 * FD_STEP)
        ad = float(sum(jnp.sum(g * d) for g, d in zip(jax.tree.leaves(grad),
                                                       jax.tree.leaves(direction))))
    assert abs(fd) > 1e-3  # not vacuous: |d meta-loss| ~ 2e-2 .. 1e-1 along this direction
    np.testing.assert_allclose(ad, fd, rtol=FD_RTOL)
