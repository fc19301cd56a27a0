"""metaopt.hypernet and metaopt.complexity_control against closed forms: the best response of
ridge regression, its derivative, the Gaussian KL, magnitude pruning."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import complexity_control as cc
from metaopt import hypernet


def _ridge(seed=1, n=20, d=5):
    """L_train(w, lam) = |X w - y|^2 / (2n) + exp(lam) |w|^2, L_val on other data; the best
    response w*(lam) = (X^T X / n + 2 exp(lam) I)^{-1} X^T y / n."""
    rng = np.random.default_rng(seed)
    x, xv = jnp.asarray(rng.normal(size=(n, d))), jnp.asarray(rng.normal(size=(n, d)))
    w_true = jnp.asarray(rng.normal(size=(d,)))
    y = x @ w_true + 2.0 * jnp.asarray(rng.normal(size=(n,)))
    yv = xv @ w_true + 2.0 * jnp.asarray(rng.normal(size=(n,)))

    def train(p, lam):
        return 0.5 * jnp.mean((x @ p["w"] - y) ** 2) + jnp.exp(lam[0]) * jnp.sum(p["w"] ** 2)

    def val(p):
        return 0.5 * jnp.mean((xv @ p["w"] - yv) ** 2)

    def best(lam):
        return jnp.linalg.solve(x.T @ x / n + 2 * jnp.exp(lam) * jnp.eye(d), x.T @ y / n)

    return train, val, best, {"w": jnp.zeros((d,))}


@pytest.mark.slow  # ~10 s: 3 fits of a few thousand steps
def test_global_and_local_best_response_match_ridge_closed_form():
    """The global MLP hypernetwork fits w*(lam) on its prior's bulk; tuning lam through it
    lands at the closed-form validation optimum; one local fit of the linear hypernetwork at
    lam_hat gives w*(lam_hat) and dw*/dlam(lam_hat); alternating finds the optimum too."""
    with jax.enable_x64(True):
        train, val, best, template = _ridge()
        grid = jnp.linspace(-6.0, 2.0, 801)
        lam_opt = float(grid[jnp.argmin(jax.vmap(lambda lm: val({"w": best(lm)}))(grid))])
        assert -5.0 < lam_opt < 1.0  # interior: the regulariser matters

        net = hypernet.mlp_hypernet(template, hidden=16, center=-2.0, scale=2.0)
        phi, _, _ = jax.jit(lambda p, k: hypernet.fit_hypernet(
            net, train, p, k, mean=-2.0, std=2.0, steps=3000, num_samples=16,
            optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, 3000))))(
            net.init(jax.random.key(0)), jax.random.key(1))
        for lam in (-3.0, -2.0, -1.0):
            np.testing.assert_allclose(net.apply(phi, lam)["w"], best(lam), atol=0.03)
        lam, _, _ = hypernet.tune_lambda(net, val, phi, jnp.asarray(0.5), steps=300,
                                         optimizer=optax.adam(0.05))
        assert abs(float(lam[0]) - lam_opt) < 0.25, (lam, lam_opt)

        lin = hypernet.linear_hypernet(template)
        lam_hat = -1.5
        phi = {**lin.init(None), "c": jnp.asarray([lam_hat])}
        phi, _, _ = hypernet.fit_hypernet(lin, train, phi, jax.random.key(2), mean=lam_hat,
                                          std=0.1, steps=3000, num_samples=16,
                                          optimizer=optax.adam(3e-2))
        np.testing.assert_allclose(phi["w0"], best(lam_hat), atol=5e-3)
        np.testing.assert_allclose(phi["w"][:, 0], jax.jacfwd(best)(lam_hat), atol=0.02)

        out = hypernet.alternate(lin, train, val, lin.init(None), jnp.asarray(1.0),
                                 jax.random.key(3), rounds=200, hyper_steps=10, lam_steps=1,
                                 std=0.3, hyper_optimizer=optax.adam(3e-2),
                                 lam_optimizer=optax.adam(0.05))
        assert abs(float(out.lam[0]) - lam_opt) < 0.25, (out.lam, lam_opt)
        assert out.lam_path.shape == (200, 1) and out.val_loss.shape == (200,)


def test_gaussian_kl_matches_numerical_integral():
    from scipy import integrate, stats

    mu, sigma, s = 0.7, 0.3, 1.5
    q, p = stats.norm(mu, sigma), stats.norm(0, s)
    ref = integrate.quad(lambda w: q.pdf(w) * (q.logpdf(w) - p.logpdf(w)), -10, 10)[0]
    kl = cc.gaussian_kl({"a": jnp.asarray([mu])}, {"a": jnp.asarray([np.log(sigma)])}, s)
    assert abs(float(kl) - ref) < 1e-5
    two = cc.gaussian_kl({"a": jnp.asarray([mu, mu])},
                         {"a": jnp.full((2,), np.log(sigma))}, s)
    assert abs(float(two) - 2 * ref) < 1e-5


def test_magnitude_prune_and_pruned_fraction():
    params = {"a": jnp.asarray([0.5, -0.1, 3.0]), "b": jnp.asarray([[-2.0, 0.01], [0.2, -0.3]])}
    pruned = cc.magnitude_prune(params, 0.5)  # floor(0.5 * 7) = 3 smallest: 0.01, -0.1, 0.2
    np.testing.assert_allclose(pruned["a"], [0.5, 0.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(pruned["b"], [[-2.0, 0.0], [0.0, -0.3]], rtol=1e-6)
    assert float(cc.pruned_fraction(params, 0.25)) == pytest.approx(3 / 7)
    assert float(cc.pruned_fraction(pruned, 1e-12)) == pytest.approx(3 / 7)


def test_complexity_loss_limits():
    """lam -> 0 with tiny sigma: the loss is the likelihood of the mean; the KL term is
    lam KL / N exactly (a likelihood that ignores w)."""
    template = {"w": jnp.zeros((3,))}
    net = hypernet.mlp_hypernet(cc.variational_template(template, log_sigma=-20.0), hidden=4)
    phi = net.init(jax.random.key(0))
    nll = lambda p: jnp.sum((p["w"] - 1.0) ** 2)  # noqa: E731

    @jax.jit
    def values(phi):
        tiny = cc.complexity_loss(net, nll, phi, jax.random.key(1), jnp.asarray([1e-12]),
                                  num_train=10)
        const = cc.complexity_loss(net, lambda p: 0.0, phi, jax.random.key(1),
                                   jnp.asarray([2.0]), num_train=10)
        q = net.apply(phi, jnp.log10(2.0))
        return (tiny, nll(net.apply(phi, -12.0)["mu"]), const,
                2.0 * cc.gaussian_kl(q["mu"], q["log_sigma"], 1.0) / 10)

    tiny, ref_tiny, const, ref_const = values(phi)
    assert float(tiny) == pytest.approx(float(ref_tiny), rel=1e-5)
    assert float(const) == pytest.approx(float(ref_const), rel=1e-5)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="hidden"):
        hypernet.mlp_hypernet({"w": jnp.zeros(2)}, hidden=0)
    with pytest.raises(ValueError, match="lam"):
        net = hypernet.linear_hypernet({"w": jnp.zeros(2)}, in_dim=2)
        net.apply(net.init(None), jnp.zeros(3))
    with pytest.raises(ValueError, match="prior_std"):
        cc.gaussian_kl({"w": jnp.zeros(2)}, {"w": jnp.zeros(2)}, 0.0)
    with pytest.raises(ValueError, match="low, high"):
        cc.sample_log_uniform(jax.random.key(0), 1.0, 0.1)
