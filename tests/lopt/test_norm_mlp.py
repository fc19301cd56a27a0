"""The normalized per-parameter MLP optimizer (``norm_mlp``) against closed forms.

* With its network's output layer zeroed, its update is the closed form
  ``-lr * base(k/T) * a / rms(a)``, ``a = m / sqrt(v + 1e-10)`` per tensor (numpy reference).
* Loss-scale invariance, unit per-tensor RMS times ``lr``, the bounded learned schedule.
* Newton-Schulz against the polar factor ``U V^T`` of the SVD.

Its meta-gradient against float64 central differences: ``tests/lopt/test_lopt_metagrad.py``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import lopt
from metaopt.lopt.norm_mlp import newton_schulz


def _params(key=0):
    k1, k2 = jax.random.split(jax.random.key(key))
    return {"w": jax.random.normal(k1, (6, 5)), "b": jax.random.normal(k2, (5,))}


def _grads(i):
    return jax.tree.map(lambda p: jnp.sin(3.0 * p + i), _params(i + 10))


def _run(tx, params, steps=3, scale=1.0):
    state = tx.init(params)
    update = jax.jit(tx.update)
    ups = []
    for i in range(steps):
        g = jax.tree.map(lambda x: scale * x, _grads(i))
        u, state = update(g, state, params)
        params = optax.apply_updates(params, u)
        ups.append(u)
    return ups


def _zero_output(theta):
    layers = list(theta["net"]["layers"])
    layers[-1] = jax.tree.map(jnp.zeros_like, layers[-1])
    return {**theta, "net": {**theta["net"], "layers": layers}}


def test_untrained_direction_is_the_normalized_adam_direction():
    lo = lopt.make("norm_mlp", learning_rate=0.01, mom_decays=(0.9,), rms_decays=(0.999,))
    theta = _zero_output(lo.init(jax.random.key(0)))
    T = 7
    ups = _run(lo.optimizer(theta, num_steps=T), _params(), steps=4)
    m = {k: 0.0 for k in ("w", "b")}
    v = dict(m)
    for k, u in enumerate(ups):
        g = _grads(k)
        for name in ("w", "b"):
            gn = np.asarray(g[name], np.float64)
            m[name] = 0.9 * m[name] + 0.1 * gn
            v[name] = 0.999 * v[name] + 0.001 * gn ** 2
            a = m[name] / np.sqrt(v[name] + 1e-10)
            want = -0.01 * 0.5 * (1 + np.cos(np.pi * k / T)) * a / np.sqrt(np.mean(a ** 2))
            np.testing.assert_allclose(np.asarray(u[name]), want, rtol=2e-4, atol=1e-8)


@pytest.mark.parametrize("orthogonalize", [False, True])
def test_updates_are_invariant_to_the_loss_scale(orthogonalize):
    lo = lopt.make("norm_mlp", orthogonalize=orthogonalize)
    theta = jax.tree.map(lambda x: x + 0.3, lo.init(jax.random.key(1)))  # a "trained" theta
    tx = lo.optimizer(theta, num_steps=10)
    a = _run(tx, _params(), scale=1.0)
    b = _run(tx, _params(), scale=1000.0)
    for ua, ub in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(ua), np.asarray(ub), rtol=2e-3, atol=1e-7)


def test_per_tensor_rms_is_the_learning_rate_and_the_schedule_is_bounded():
    lo = lopt.make("norm_mlp", learning_rate=0.02, scheduler="none", decay="none")
    theta = lo.init(jax.random.key(2))
    theta = {**theta, "net": jax.tree.map(lambda x: x + 0.3, theta["net"])}
    for u in jax.tree.leaves(_run(lo.optimizer(theta), _params())):
        np.testing.assert_allclose(float(jnp.sqrt(jnp.mean(u ** 2))), 0.02, rtol=1e-4)
    lo = lopt.make("norm_mlp", learning_rate=0.02, decay="none", max_log_mult=2.0)
    theta = lo.init(jax.random.key(2))
    big = {**theta, "sched": jax.tree.map(lambda x: 1e3 * (x + 1.0), theta["sched"])}
    for u in jax.tree.leaves(_run(lo.optimizer(big), _params())):
        rms = float(jnp.sqrt(jnp.mean(u ** 2)))
        assert 0.02 * np.exp(-2.0) * 0.999 <= rms <= 0.02 * np.exp(2.0) * 1.001
        assert abs(np.log(rms / 0.02)) > 1.9  # saturated at the bound, not at 1


@pytest.mark.parametrize("shape", [(12, 5), (5, 12), (3, 3, 2, 4)])
def test_newton_schulz_approximates_the_polar_factor(shape):
    d = jax.random.normal(jax.random.key(3), shape)
    x = np.asarray(newton_schulz(d, 5), np.float64).reshape(-1, shape[-1])
    u, s, vt = np.linalg.svd(np.asarray(d, np.float64).reshape(-1, shape[-1]),
                             full_matrices=False)
    polar = u @ vt
    cos = np.sum(x * polar) / np.linalg.norm(x) / np.linalg.norm(polar)
    assert cos > 0.97
    sv = np.linalg.svd(x, compute_uv=False)
    assert sv.min() > 0.6 and sv.max() < 1.25  # Muon's quintic: roughly [0.7, 1.2]
