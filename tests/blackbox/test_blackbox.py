"""The black-box pieces of Chen et al. (2017): GP-prior samples have the RBF covariance, the
meta-losses are the paper's, a rollout only queries the function, the estimator is the exact
gradient of the mean loss, expected improvement is its closed form, and the new test functions
have their published minima."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import blackbox as bb
from metaopt.tasks.gp_functions import gp_functions, gp_value
from metaopt.tasks.testfns import TEST_FUNCTIONS, on_unit_box


@pytest.mark.slow  # compile-heavy: ~20-130 s on the loaded 2-core machine
def test_gp_samples_have_the_rbf_kernel_covariance():
    fam = gp_functions(dim=2, num_features=128, lengthscale=(0.3, 0.3))
    cfgs = jax.vmap(fam.sample)(jax.random.split(jax.random.key(0), 4000))
    pts = jnp.asarray([[0.5, 0.5], [0.6, 0.5], [0.8, 0.9], [0.1, 0.2]], jnp.float32)
    vals = np.asarray(jax.vmap(lambda c: gp_value(c, pts))(cfgs))  # [4000, 4]
    emp = vals.T @ vals / len(vals)
    d2 = np.sum((np.asarray(pts)[:, None] - np.asarray(pts)[None]) ** 2, -1)
    # Monte Carlo over 4000 functions: std of an entry <= sqrt(2 / 4000) = 0.022
    np.testing.assert_allclose(emp, np.exp(-d2 / (2 * 0.3**2)), atol=0.08)
    assert abs(vals.mean()) < 0.05
    t = fam.task(jax.tree.map(lambda a: a[0], cfgs))
    x = t.init(jax.random.key(1))
    assert x.shape == (2,) and bool(jnp.all((x >= 0) & (x <= 1)))
    assert float(t.loss(pts[0], t.batch(jax.random.key(2), "train"))) == pytest.approx(
        float(vals[0, 0]), abs=1e-5)


def test_meta_losses_are_the_papers_and_oi_telescopes():
    ys = jnp.asarray([[0.3, 0.5, -0.2, 0.1, -0.7, -0.1]])
    np.testing.assert_allclose(bb.best_so_far(ys), [[0.3, 0.3, -0.2, -0.2, -0.7, -0.7]])
    np.testing.assert_allclose(bb.meta_loss(ys, "sum"), [np.mean(ys)], rtol=1e-6)
    # sum_t min(y_t - min_{i<t} y_i, 0) = (0) + (-0.5) + 0 + (-0.5) + 0, over T = 6
    np.testing.assert_allclose(bb.meta_loss(ys, "oi"), [-1.0 / 6], rtol=1e-6)
    np.testing.assert_allclose(bb.meta_loss(ys, "oi"), (ys.min() - ys[0, 0]) / 6, rtol=1e-6)
    with pytest.raises(ValueError, match="loss: unknown value 'ei'"):
        bb.meta_loss(ys, "ei")


@pytest.mark.slow  # compile-heavy: ~20-130 s on the loaded 2-core machine
def test_rollout_queries_the_box_and_the_estimator_is_the_exact_mean_gradient():
    policy = bb.rnn_policy(3, hidden=(8,))
    theta = policy.init(jax.random.key(0))
    calls = []
    fn = lambda x: jnp.sum((x - 0.3) ** 2)  # noqa: E731
    xs, ys = bb.rollout(policy, theta, lambda x: calls.append(1) or fn(x),
                        jnp.full((3,), 0.9), 7)
    assert xs.shape == (7, 3) and ys.shape == (7,)
    assert bool(jnp.all((xs > 0) & (xs < 1)))
    np.testing.assert_allclose(ys, jax.vmap(fn)(xs), rtol=1e-6)
    np.testing.assert_allclose(xs[0], 0.9)

    fam = gp_functions(dim=3)
    est = bb.blackbox_backprop(policy, fam, horizon=5, num_tasks=2, loss="oi")
    key = jax.random.key(5)
    grad, _, metrics = est.estimate(key, theta, est.init(key, theta))

    def reference(th):  # the same tasks, one at a time
        total = 0.0
        for k in jax.random.split(key, 2):
            k_cfg, k_x = jax.random.split(k)
            t = fam.task(fam.sample(k_cfg))
            total += bb.meta_loss(bb.rollout(policy, th, lambda x, t=t: t.loss(x, {}),
                                             t.init(k_x), 5)[1], "oi") / 2
        return total

    ref_loss, ref_grad = jax.value_and_grad(reference)(theta)
    assert float(metrics["meta_loss"]) == pytest.approx(float(ref_loss), rel=1e-5)
    for a, b in zip(jax.tree.leaves(grad), jax.tree.leaves(ref_grad), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)
    assert float(metrics["inner_steps"]) == 10 and float(metrics["masked_tasks"]) == 0


@pytest.mark.slow  # compile-heavy: ~20-130 s on the loaded 2-core machine
def test_expected_improvement_matches_monte_carlo_and_gp_ei_beats_random_search():
    rng = np.random.default_rng(0)
    mu, sd, best = np.array([0.0, 1.0, -0.5]), np.array([1.0, 0.5, 0.1]), 0.2
    z = mu[:, None] + sd[:, None] * rng.standard_normal((3, 400_000))
    np.testing.assert_allclose(bb.expected_improvement(mu, sd, best),
                               np.maximum(best - z, 0).mean(1), rtol=1e-2)
    fn = lambda x: float(np.sum((np.asarray(x) - [0.2, 0.7]) ** 2))  # noqa: E731
    ei = [bb.gp_ei(fn, np.array([0.9, 0.1]), 12, np.random.default_rng(s)).min()
          for s in range(3)]
    rs = jax.vmap(lambda k: bb.random_search(k, lambda x: jnp.sum(
        (x - jnp.asarray([0.2, 0.7])) ** 2), jnp.asarray([0.9, 0.1]), 12))(
        jax.random.split(jax.random.key(0), 3))
    assert rs.shape == (3, 12)
    # E min of 11 uniform squared distances is ~ 1 / (11 pi) = 0.03; GP-EI gets ~1e-5
    assert max(ei) < 1e-3 and np.mean(ei) < 0.1 * float(rs.min(1).mean())


@pytest.mark.slow  # float64 compiles; the float32 minima are checked in tests/tasks
@pytest.mark.parametrize("name", ["branin", "hartmann3", "hartmann6"])
def test_benchmark_functions_have_their_published_global_minimum(name):
    spec = TEST_FUNCTIONS[name]
    with jax.enable_x64(True):
        w = jnp.asarray(spec.minimum, jnp.float64)
        assert float(spec.fn(w)) == pytest.approx(spec.f_min, abs=5e-6)
        assert float(jnp.max(jnp.abs(jax.grad(spec.fn)(w)))) < 1e-5
        u = jax.random.uniform(jax.random.key(0), (100_000, len(spec.minimum)), jnp.float64)
        vals = jax.vmap(on_unit_box(spec))(u)
        assert float(vals.min()) > spec.f_min  # nothing below the global minimum
    if name == "branin":  # its three minimisers, exactly 5 / (4 pi)
        for m in [(-np.pi, 12.275), (np.pi, 2.275), (3 * np.pi, 2.475)]:
            assert float(spec.fn(jnp.asarray(m))) == pytest.approx(5 / (4 * np.pi), abs=1e-5)


def test_bad_options_name_the_field():
    with pytest.raises(ValueError, match="dim"):
        gp_functions(dim=0)
    with pytest.raises(ValueError, match="lengthscale"):
        gp_functions(lengthscale=(0.5, 0.1))
    with pytest.raises(ValueError, match="dim"):
        bb.rnn_policy(0)
    policy = bb.rnn_policy(2)
    with pytest.raises(ValueError, match="loss: unknown value"):
        bb.blackbox_backprop(policy, gp_functions(2), horizon=5, num_tasks=2, loss="ei")
    with pytest.raises(ValueError, match="horizon"):
        bb.blackbox_backprop(policy, gp_functions(2), horizon=1, num_tasks=2)
    with pytest.raises(TypeError, match="policy"):
        bb.blackbox_backprop("lstm", gp_functions(2), horizon=5, num_tasks=2)
