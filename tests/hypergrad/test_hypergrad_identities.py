"""The seed's identities, checked numerically: limits, exact cases, finite differences, IFT on
ridge regression, the descent theorem on the Shaban toy (the cost counters: test_costs.py)."""

import hypergrad_problems as problems
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import hypergrad as hg
from metaopt.estimators import NoState, full_backprop
from metaopt.inner import inner_problem, truncation


def _grad(est, key, alpha):
    g, _, m = problems.jit(est.estimate)(key, alpha, est.init(key, alpha))
    return g, m


def _grads(ests, key, alpha):
    """The estimates of several estimators, compiled as one program (one compile)."""
    run = problems.jit(lambda k, a: [e.estimate(k, a, e.init(k, a))[0] for e in ests])
    return run(key, alpha)


def _flat(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(tree)])


def _digits_setup(horizon):
    task = problems.tiny_digits_task()
    alpha = {"log_lr": jnp.log(jnp.asarray(0.3)),
             "logits": 0.5 * jax.random.normal(jax.random.key(3), (200,))}
    opt = lambda a: optax.sgd(jnp.exp(a["log_lr"]), momentum=0.5)
    hparams = lambda a: a["logits"]
    return task, opt, hparams, alpha


def test_greedy_gamma_to_zero_is_t1t2():
    """Theorem 1 of the seed: lim_{gamma -> 0+} greedy = T1-T2 (digits MLP, lr and weights)."""
    task, opt, hparams, alpha = _digits_setup(5)
    bl = hg.task_bilevel(task, opt, horizon=5, hparams_fn=hparams)
    gammas = ((0.0, 1e-6), (1e-4, 1e-3), (0.5, None))
    want, *gots = _grads([hg.t1t2(bl, num_tasks=2)]
                         + [hg.greedy(bl, gamma=g, num_tasks=2) for g, _ in gammas],
                         jax.random.key(0), alpha)
    for (gamma, tol), got in zip(gammas, gots, strict=True):
        err = float(jnp.linalg.norm(_flat(got) - _flat(want)) / jnp.linalg.norm(_flat(want)))
        assert (err < tol) if tol else (err > 0.05), (gamma, err)


def test_greedy_equals_rmd_when_phi_jacobian_is_identity():
    """With A_t = I the exact hypergradient is sum_t grad L_val(w_T) B_t; greedy with gamma = 1
    is sum_t grad L_val(w_t) B_t, equal when grad_w L_val is constant (L_val linear in w)."""
    with jax.enable_x64(True):
        key, alpha = jax.random.key(1), jnp.array([0.3, -0.7, 1.1])
        bl = problems.identity_jacobian(12)
        bl2 = problems.identity_jacobian(12, linear_val=False)
        exact, greedy, discounted, e2, g2 = _grads(
            [hg.rmd(bl, num_tasks=3), hg.greedy(bl, gamma=1.0, num_tasks=3),
             hg.greedy(bl, gamma=0.9, num_tasks=3), hg.rmd(bl2, num_tasks=3),
             hg.greedy(bl2, gamma=1.0, num_tasks=3)], key, alpha)
        np.testing.assert_allclose(greedy, exact, rtol=1e-12, atol=1e-12)
        assert np.linalg.norm(exact) > 0.1
        # negative controls: a discount, or an L_val that is not linear in w, break the equality
        assert not np.allclose(discounted, exact, rtol=1e-3)
        assert not np.allclose(g2, e2, rtol=1e-3)


def test_rmd_matches_central_finite_differences():
    """RMD = (L(alpha + eps u) - L(alpha - eps u)) / 2 eps along random u, float64, where
    L(alpha) = L_val(w_T(alpha)) with the same tasks and batches (momentum SGD, lr + weights)."""
    with jax.enable_x64(True):
        task, opt, hparams, alpha = _digits_setup(6)
        bl = hg.task_bilevel(task, opt, horizon=6, hparams_fn=hparams)
        key = jax.random.key(5)
        grad, metrics = _grad(hg.rmd(bl, num_tasks=1), key, alpha)
        k_init, k_unroll = jax.random.split(key)
        cfg, w0 = bl.init(jax.random.split(k_init, 1)[0], alpha)
        keys = jax.random.split(jax.random.split(k_unroll, 1)[0], 6)

        @problems.jit
        def objective(a):
            w = jax.lax.scan(lambda w, k: (bl.phi(w, a, bl.batch(k, cfg)), None), w0, keys)[0]
            return bl.val_loss(w, a, bl.batch(keys[-1], cfg))

        np.testing.assert_allclose(objective(alpha), metrics["meta_loss"], rtol=1e-6)
        eps = 1e-5
        for i in range(3):
            k = jax.random.key(10 + i)
            u = {"log_lr": jax.random.normal(k, ()), "logits": jax.random.normal(k, (200,))}
            up = jax.tree.map(lambda a, d: a + eps * d, alpha, u)
            down = jax.tree.map(lambda a, d: a - eps * d, alpha, u)
            fd = (objective(up) - objective(down)) / (2 * eps)
            np.testing.assert_allclose(jnp.vdot(_flat(grad), _flat(u)), fd, rtol=1e-6)


def test_rmd_equals_the_full_backprop_estimator():
    """Same key, same tasks and batches: RMD here = metaopt.estimators.full_backprop('last'),
    with and without per-step remat (which keeps the minibatch keys of the plain unroll)."""
    task, opt, hparams, alpha = _digits_setup(5)
    bl = hg.task_bilevel(task, opt, horizon=5, hparams_fn=hparams)
    problem = inner_problem(task, opt, schedule=truncation.constant(5),
                            hparams_fn=hparams)
    ests = [full_backprop(problem, num_tasks=2, meta_loss="last"), hg.rmd(bl, num_tasks=2),
            hg.rmd(bl, num_tasks=2, remat=True)]
    run = problems.jit(lambda k, a: [e.estimate(k, a, e.init(k, a)) for e in ests])
    (want, _, m_want), *others = run(jax.random.key(2), alpha)
    for got, _, m_got in others:
        np.testing.assert_allclose(m_got["meta_loss"], m_want["meta_loss"], rtol=1e-6)
        np.testing.assert_allclose(_flat(got), _flat(want), rtol=1e-4, atol=1e-7)


def test_ift_matches_ridge_regression_closed_form():
    """IFT with many Neumann terms at a converged inner solution = the closed-form
    d L_val(w*(lambda)) / d log lambda of ridge regression; few terms are visibly off."""
    with jax.enable_x64(True):
        bl, exact = problems.ridge(horizon=300)
        key = jax.random.key(0)
        ests = {k: problems.jit(e.estimate) for k, e in
                (("ift", hg.ift(bl, num_terms=300)), ("rough", hg.ift(bl, num_terms=1)))}
        for log_lam in (-2.0, 0.0):
            alpha = jnp.asarray(log_lam)
            want = exact(alpha)
            got, _, m = ests["ift"](key, alpha, NoState())
            np.testing.assert_allclose(got, want, rtol=1e-8)
            assert m["vjps"] == 301
            rough, _, _ = ests["rough"](key, alpha, NoState())
            assert abs(rough - want) > 1e-3 * abs(want)


@pytest.mark.parametrize("horizon", [5, 20])
def test_shaban_toy_greedy_is_a_descent_direction(horizon):
    """Theorem 2 of the seed: with gamma = 1 - lr, <d, d_greedy> >= c ||d||^2, c > 0, when the
    training optimum is far from the validation optimum (assumption 8). On 500 random toys
    (w_0, c ~ N(0, I), alpha ~ N(0, I)) it holds whenever ||alpha - c|| >= ||w_0 - alpha||
    and in >= 99% of all instances (failures, cosine down to -0.7, are toys with alpha near c)."""
    lr, n = 0.1, 500
    bl = hg.shaban_toy(horizon, lr=lr)
    greedy, exact = hg.greedy(bl, gamma=1 - lr), hg.rmd(bl)
    keys = jax.random.split(jax.random.key(0), n)
    alphas = jax.random.normal(jax.random.key(1), (n, 2))

    def one(key, alpha):
        k_init = jax.random.split(key)[0]
        cfg, w0 = bl.init(jax.random.split(k_init, 1)[0], alpha)
        far = jnp.linalg.norm(alpha - cfg["c"]) >= jnp.linalg.norm(w0 - alpha)
        return greedy.estimate(key, alpha, ())[0], exact.estimate(key, alpha, ())[0], far

    g, d, far = problems.jit(jax.vmap(one))(keys, alphas)
    ratio = jnp.sum(g * d, 1) / jnp.sum(d * d, 1)
    assert int(far.sum()) > n // 3
    assert float(jnp.min(ratio[far])) > 0.05
    assert float(jnp.mean(ratio > 0)) >= 0.99
    cos = jnp.sum(g * d, 1) / jnp.linalg.norm(g, axis=1) / jnp.linalg.norm(d, axis=1)
    assert float(jnp.mean(cos)) > 0.9
