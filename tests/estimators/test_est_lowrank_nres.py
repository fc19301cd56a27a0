"""Low-rank ES/PES perturbations, noise-reuse ES and TBPTT's remat options, against exact
references (style of ``test_est_stochastic.py``: ``N`` independent one-particle estimators,
``|mean - reference| < 4 SE`` (4.5 where many entries are tested at once), and each test
asserts its own power).

* On a problem whose meta-loss is quadratic in theta (``lowrank_reference``), any antithetic
  estimator whose perturbations have covariance ``sigma^2 I`` has the exact gradient as its
  expectation; low-rank ``sigma A B^T / sqrt(r)`` noise has that covariance, so low-rank ES,
  PES and NRES must agree with the exact gradient (and with full-rank PES), here with an
  episode that ends mid-truncation.
* NRES's own smoothed objective (one perturbation per episode, the reset-aware split of
  :mod:`metaopt.estimators.noise_reuse_es`) is checked by Gauss-Hermite quadrature on the
  non-quadratic learning-rate problem of ``quadratic_reference``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import lowrank_reference as L
import numpy as np
import pytest
import quadratic_reference as Q
from test_est_stochastic import LOG_LR, SIGMA, THETA, gauss_hermite_mean, mean_se, particle_sums

from metaopt import estimators as E
from metaopt import lopt, lowrank, tasks
from metaopt.estimators import base, lowrank_noise, persistent_es
from metaopt.inner import inner_problem, truncation

# ----------------------------------------------------------------------------- helpers


def tree_sums(est, theta, num_truncations: int, n: int, seed: int = 0) -> dict:
    """``[n, ...]`` samples (per leaf) of ``sum_k g_k`` over ``num_truncations`` calls."""

    def one(key):
        k0, k1 = jax.random.split(key)

        def body(state, k):
            g, state, _ = est.estimate(k, theta, state)
            return state, g

        _, grads = jax.lax.scan(body, est.init(k0, theta), jax.random.split(k1, num_truncations))
        return jax.tree.map(lambda g: jnp.sum(g, axis=0), grads)

    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.jit(jax.vmap(one))(keys))


def check_unbiased(samples: dict, ref: dict, z_max: float = 4.5) -> None:
    """Every entry within ``z_max`` SE of ``ref``; power: the entries carrying the gradient
    (``|ref| > 0.3 max``) have SE below 5% of it, so a wrong scale (``sqrt(2)`` from a
    missing ``1/sqrt(r)`` at ``r = 2``, or 2) is > 8 SE off."""
    for name in ref:
        mean, se = samples[name].mean(0), samples[name].std(0, ddof=1) / np.sqrt(
            samples[name].shape[0])
        z = np.abs(mean - ref[name]) / se
        assert z.max() < z_max, (name, z.max(), mean, ref[name])
        big = np.abs(ref[name]) > 0.3 * np.abs(ref[name]).max()
        assert np.all(se[big] < 0.05 * np.abs(ref[name][big])), (name, se, ref[name])


# ----------------------------------------------------------------------------- low rank


def test_lowrank_matmul_matches_the_materialized_weights():
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(0), 4)
        for r in (1, 6):  # elementwise correction, matmul correction
            lr = lowrank.LowRank(jax.random.normal(k[0], (5, 7)),
                                 jax.random.normal(k[1], (5, r)), jax.random.normal(k[2], (7, r)))
            x = jax.random.normal(k[3], (3, 5))
            np.testing.assert_allclose(lowrank.matmul(x, lr), x @ lr.value(), rtol=1e-12)


@pytest.mark.slow
def test_lowrank_particles_unroll_like_their_materialized_weights():
    """The inner problem gives an optimizer that does not take low-rank theta (the 2 x 32
    MLP learned optimizer) each particle's dense ``w + a b^T``: an unroll of low-rank
    particles, vmapped with the shared ``w`` (``in_axes`` ``None``), equals the unroll of the
    materialized thetas; and those are ``theta +- E`` for the two halves (float64)."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.PRNGKey(0), 4)
        learned = lopt.mlp_lopt(hidden=(32, 32))
        assert not lowrank.takes_lowrank(learned.optimizer)
        theta = jax.tree.map(lambda a: a.astype(jnp.float64), learned.init(k[0]))
        noise = lowrank_noise.draw(k[1], theta, 3, 0.3, 2)
        thetas, axes = lowrank_noise.perturbed(theta, noise)
        dense = lowrank.materialize(thetas)
        prob = inner_problem(tasks.quadratic_family(dim=4), learned.optimizer,
                             schedule=truncation.constant(8))
        states = prob.init_batch(k[2], dense, 6, theta_batched=True)
        keys = jax.random.split(k[3], 6)
        got = prob.unroll_batch(keys, thetas, states, 5, theta_batched=axes)
        want = prob.unroll_batch(keys, dense, states, 5, theta_batched=True)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-15)
        assert float(jnp.max(jnp.abs(got[0].params - states.params))) > 1e-6  # it moved
        w0 = theta["layers"][1]["w"][None]
        np.testing.assert_allclose(dense["layers"][1]["w"][:3] - w0,
                                   noise.dense["layers"][1]["w"], rtol=1e-9)
        np.testing.assert_allclose(dense["layers"][1]["w"][3:] - w0,
                                   -noise.dense["layers"][1]["w"], rtol=1e-9)


def test_full_rank_path_is_unchanged_bit_for_bit():
    """``rank=None`` PES: the estimate equals the formula of the full-rank estimator computed
    here from its primitives (Gaussian ``eps``, one unroll of ``[theta + eps; theta - eps]``,
    the reset-aware terms), bit for bit."""
    prob, n, trunc, sigma = L.problem(10), 3, 4, 0.1
    est = E.pes(prob, num_tasks=n, sigma=sigma, unroll_length=trunc, stagger="none")
    state = est.init(jax.random.PRNGKey(0), L.THETA)
    key = jax.random.PRNGKey(5)
    grad, new, _ = jax.jit(est.estimate)(key, L.THETA, state)

    def by_hand(key, state):
        k_eps, k_unroll = jax.random.split(key)
        eps = base.gaussian_like(k_eps, L.THETA, n, sigma)
        plus = jax.tree.map(lambda t, e: jnp.broadcast_to(t, e.shape) + e, L.THETA, eps)
        minus = jax.tree.map(lambda t, e: jnp.broadcast_to(t, e.shape) - e, L.THETA, eps)
        keys = jax.random.split(k_unroll, n)
        _, out = prob.unroll_batch(jnp.concatenate([keys, keys]), base.concat_pairs(plus, minus),
                                   base.concat_pairs(state.pos, state.neg), trunc,
                                   theta_batched=True)
        v = out.meta_loss
        g, xi = persistent_es.pes_particle_grads(
            v[:n] - v[n:], base.step_weights("valid", trunc), jnp.ones((n, trunc), bool),
            out.done[:n], state.xi, eps, sigma)
        return base.task_mean(g), xi

    ref, xi = jax.jit(by_hand)(key, state)
    for a, b in zip(jax.tree.leaves((grad, new.xi)), jax.tree.leaves((ref, xi)), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("name,rank", [("pes", 2), pytest.param("nres", 2, marks=pytest.mark.slow),
                                       pytest.param("pes", None, marks=pytest.mark.slow)])
def test_lowrank_estimators_are_unbiased_on_a_quadratic(name, rank):
    """3 truncations of 4 steps, episodes of 10 (the reset falls inside truncation 3):
    ``E[sum_k g_k]`` is the exact gradient for low-rank PES and NRES, as for full-rank PES."""
    trunc, episode, k = 4, 10, 3
    est = E.make(name, L.problem(episode), num_tasks=1, sigma=SIGMA, unroll_length=trunc,
                 stagger="none", rank=rank)
    check_unbiased(tree_sums(est, L.THETA, k, 20_000), L.exact_grad(k, trunc, episode))


@pytest.mark.slow
def test_lowrank_full_episode_es_is_unbiased_on_a_quadratic():
    est = E.antithetic_es(L.problem(6), num_tasks=1, sigma=SIGMA, rank=1)
    check_unbiased(tree_sums(est, L.THETA, 1, 20_000), L.exact_grad(1, 6, 6))


@pytest.mark.slow
def test_lowrank_pes_accumulator_restarts_at_episode_boundaries():
    """Var(xi) / sigma^2 of every entry of the 2-D leaf: 1 + truncations since the episode
    began, exactly 1 after a truncation containing a reset (episodes of 12, truncations of
    5); low-rank noise has the full-rank per-entry variance."""
    n = 2000
    est = E.pes(L.problem(12), num_tasks=n, sigma=SIGMA, unroll_length=5, stagger="none",
                rank=1)
    state = jax.jit(est.init)(jax.random.PRNGKey(0), L.THETA)
    step = jax.jit(est.estimate)
    ratios = []
    for key in jax.random.split(jax.random.PRNGKey(1), 5):
        _, state, _ = step(key, L.THETA, state)
        ratios.append(np.asarray(jnp.var(state.xi["W"], axis=0)) / SIGMA**2)
    expected = np.array([1, 2, 1, 2, 1])[:, None, None]
    np.testing.assert_allclose(ratios, np.broadcast_to(expected, (5, 4, 3)), rtol=0.2)


def test_rank_is_validated():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rank"):
            E.pes(L.problem(10), num_tasks=1, sigma=0.1, unroll_length=4, rank=bad)


# ----------------------------------------------------------------------------- NRES


def test_nres_is_unbiased_for_its_own_smoothed_objective_with_mid_truncation_resets():
    """Episodes of 12, truncations of 5 (30 steps): steps 0-14 run under eps_1 (the second
    episode starts inside truncation 3 under eps_1), 15-24 under eps_2, 25-29 under eps_3.
    Reference: Gauss-Hermite over (eps_1, eps_2, eps_3) of the exact gradient."""
    episode, trunc, k = 12, 5, 6
    prob = Q.problem(Q.fixed_task(), episode)
    counts = jnp.array([15, 10, 5])

    def grad_at(eps):
        f = lambda a: Q.objective(jnp.repeat(a + eps, counts, total_repeat_length=30), "valid",
                                  trunc, episode)
        return jax.grad(f)(jnp.float64(LOG_LR))

    ref = gauss_hermite_mean(grad_at, 3, SIGMA, 8)
    est = E.noise_reuse_es(prob, num_tasks=1, sigma=SIGMA, unroll_length=trunc, stagger="none")
    mean, se = mean_se(particle_sums(est, k, 20_000))
    assert abs(mean - ref) < 4 * se, (mean, ref, se)
    assert 4 * se < 0.05 * abs(ref)


def test_nres_reuses_its_noise_and_accumulates_only_across_a_reset():
    """Per particle: the same eps until a truncation with a reset; Var(xi) / sigma^2 is 1
    except in the episode begun mid-truncation 3, which has seen two perturbations."""
    n = 4000
    est = E.noise_reuse_es(Q.problem(Q.fixed_task(), 12), num_tasks=n, sigma=SIGMA,
                           unroll_length=5, stagger="none")
    state = jax.jit(est.init)(jax.random.PRNGKey(0), THETA)
    step = jax.jit(est.estimate)
    ratios, eps = [], []
    for key in jax.random.split(jax.random.PRNGKey(1), 5):
        _, state, _ = step(key, THETA, state)
        ratios.append(float(jnp.var(state.xi["log_lr"])) / SIGMA**2)
        eps.append(np.asarray(state.eps["log_lr"]))
    # steps 0-4 | 5-9 | 10-14 (reset after 11) | 15-19 (fresh eps) | 20-24 (reset after 23)
    np.testing.assert_allclose(ratios, [1, 1, 1, 2, 1], rtol=0.1)
    np.testing.assert_array_equal(eps[0], eps[1])
    np.testing.assert_array_equal(eps[1], eps[2])
    assert np.all(eps[3] != eps[2]) and np.array_equal(eps[3], eps[4])


# ----------------------------------------------------------------------------- TBPTT


@pytest.mark.slow  # ~55 s on the loaded 2-core machine (compiles the per-task fallback too)
@pytest.mark.parametrize("remat,shared", [("step", True), ("none", True), ("step_dots", True),
                                          ("block", True), ("step", False)])
def test_tbptt_remat_and_shared_theta_give_the_per_task_gradient(remat, shared):
    """Every remat policy and the shared-theta reverse pass give the earlier estimator's
    gradient (per-task, no remat) on the same keys (float64; random tasks, no resets inside
    the two truncations, so that block remat's per-chunk keys draw the same numbers)."""
    with jax.enable_x64(True):
        prob = Q.problem(Q.diag_family(), 25)
        theta = {"log_lr": jnp.asarray(LOG_LR, jnp.float64)}
        kw = dict(num_tasks=3, unroll_length=10, stagger="none")
        ref_est = E.truncated_backprop(prob, remat="none", shared_theta=False, **kw)
        est = E.truncated_backprop(prob, remat=remat, shared_theta=shared, block=5, **kw)
        _assert_same_estimates(ref_est, est, theta, rtol=1e-10)


def _assert_same_estimates(ref_est, est, theta, rtol):
    """Two TBPTT estimators give the same gradient and next states over two truncations."""
    state = ref_est.init(jax.random.PRNGKey(0), theta)
    for key in jax.random.split(jax.random.PRNGKey(1), 2):
        g_ref, new_ref, metrics = ref_est.estimate(key, theta, state)
        g, new, _ = est.estimate(key, theta, state)
        np.testing.assert_allclose(g["log_lr"], g_ref["log_lr"], rtol=rtol)
        np.testing.assert_allclose(new.inner.params, new_ref.inner.params, rtol=1e-12)
        state = new_ref
    assert np.isfinite(float(g["log_lr"])) and float(metrics["meta_loss"]) > 0


@pytest.mark.slow
def test_tbptt_shared_theta_falls_back_to_per_task_masking():
    """With tasks that blow up, the shared reverse pass is non-finite and the per-task
    fallback drops exactly those tasks: same gradient as the per-task estimator."""
    prob = Q.problem(Q.key_bit_family(float("inf")), 20)
    kw = dict(num_tasks=8, unroll_length=10, stagger="none")
    a, b = (E.truncated_backprop(prob, shared_theta=s, **kw) for s in (True, False))
    state = a.init(jax.random.PRNGKey(0), THETA)
    ga, _, ma = jax.jit(a.estimate)(jax.random.PRNGKey(1), THETA, state)
    gb, _, mb = jax.jit(b.estimate)(jax.random.PRNGKey(1), THETA, state)
    assert float(ma["masked_tasks"]) == float(mb["masked_tasks"]) > 0
    np.testing.assert_allclose(float(ga["log_lr"]), float(gb["log_lr"]), rtol=1e-6)
    assert np.isfinite(float(ga["log_lr"]))


@pytest.mark.parametrize("remat", ["step", "block"])
def test_tbptt_task_groups_give_the_one_vmap_gradient(remat):
    """Tasks mapped in 2 slices per step (the CPU default for even batches) give the same
    gradient and states as one ``vmap`` (float64; resets inside the truncations)."""
    with jax.enable_x64(True):
        prob = Q.problem(Q.diag_family(), 7)
        theta = {"log_lr": jnp.asarray(LOG_LR, jnp.float64)}
        kw = dict(num_tasks=4, unroll_length=10, stagger="even", remat=remat, block=5)
        one, two = (E.truncated_backprop(prob, task_groups=g, **kw) for g in (1, 2))
        _assert_same_estimates(one, two, theta, rtol=1e-12)


def test_tbptt_options_are_validated():
    prob = Q.problem(Q.fixed_task(), 10)
    with pytest.raises(ValueError, match="remat"):
        E.truncated_backprop(prob, num_tasks=1, unroll_length=4, remat="sometimes")
    with pytest.raises(ValueError, match="block"):
        E.truncated_backprop(prob, num_tasks=1, unroll_length=4, remat="block", block=3)
    with pytest.raises(TypeError, match="shared_theta"):
        E.truncated_backprop(prob, num_tasks=1, unroll_length=4, shared_theta=1)
    with pytest.raises(ValueError, match="task_groups: must divide num_tasks=6, got 4"):
        E.truncated_backprop(prob, num_tasks=6, unroll_length=4, task_groups=4)
    with pytest.raises(ValueError, match="task_groups"):
        E.truncated_backprop(prob, num_tasks=6, unroll_length=4, task_groups=0)

