"""Quadratic family: SGD in the inner problem is (I - eta A)^t; spectra are as configured."""

import jax
import numpy as np
import optax
import pytest

import metaopt
from metaopt.tasks import quadratic_family


def test_sgd_unroll_equals_closed_form():
    # (tests/inner covers the log-spaced spectrum; here the random one.)
    dim, eta, steps = 7, 0.4, 30
    fam = quadratic_family(dim=dim, condition_number=30.0, max_eig=2.0, random_spectrum=True)
    problem = metaopt.inner_problem(fam, optax.sgd(eta),
                                    schedule=metaopt.truncation.constant(10_000), valid=False)
    state = jax.jit(problem.init)(jax.random.key(3), None)
    end, out = jax.jit(problem.unroll, static_argnums=3)(jax.random.key(4), None, state, steps)
    # Float64 reference from the float32 config: w_t - c = Q diag((1 - eta lam)^t) Q^T (w_0 - c).
    q = np.asarray(state.cfg.rotation, np.float64)
    lam = np.asarray(state.cfg.eigvals, np.float64)
    c = np.asarray(state.cfg.center, np.float64)
    z0 = q.T @ (np.asarray(state.params, np.float64) - c)
    zs = [(1.0 - eta * lam) ** t * z0 for t in range(steps + 1)]
    np.testing.assert_allclose(end.params, c + q @ zs[steps], rtol=0, atol=3e-6)
    np.testing.assert_allclose(out.loss, [0.5 * np.sum(lam * z * z) for z in zs[:steps]],
                               rtol=3e-5, atol=1e-7)
    assert not bool(out.done.any())


@pytest.mark.parametrize("random_spectrum", [False, True])
def test_hessian_condition_number_is_configured(random_spectrum):
    fam = quadratic_family(dim=6, condition_number=250.0, max_eig=3.0,
                           random_spectrum=random_spectrum)
    cfgs = jax.jit(lambda ks: jax.lax.map(fam.sample, ks))(jax.random.split(jax.random.key(0), 8))
    hessians = np.einsum("bij,bj,bkj->bik", *(np.asarray(a, np.float64)
                                             for a in (cfgs.rotation, cfgs.eigvals, cfgs.rotation)))
    eig = np.linalg.eigvalsh(hessians)
    np.testing.assert_allclose(eig[:, -1] / eig[:, 0], 250.0, rtol=1e-3)
    np.testing.assert_allclose(eig[:, -1], 3.0, rtol=1e-4)
    # The rotation is orthogonal, so the Hessian's spectrum is exactly the sampled eigenvalues.
    np.testing.assert_allclose(eig, np.sort(np.asarray(cfgs.eigvals), axis=1), rtol=1e-4)


def test_quadratic_bad_input():
    with pytest.raises(ValueError, match=r"condition_number: must be a number >= 1"):
        quadratic_family(condition_number=0.5)
    with pytest.raises(ValueError, match=r"dim: must be a positive integer \(>= 1\)"):
        quadratic_family(dim=0)
