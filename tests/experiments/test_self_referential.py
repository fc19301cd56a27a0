"""The self-referential weight matrix (metaopt.tasks.srwm, Irie et al. 2022) and its few-shot
experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks.srwm import srwm_init, srwm_read, srwm_scan, srwm_step


def _softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def test_srwm_step_is_its_own_delta_rule():
    """float64 against the equations written out per head with numpy: y, k, q, beta = W x;
    W' = W + sigmoid(beta) (W phi(q) - W phi(k)) phi(k)^T; and the delta-rule property
    W' phi(k) = W phi(k) + sigmoid(beta) |phi(k)|^2 (v - vbar)."""
    with jax.enable_x64(True):
        heads, d, d_out = 2, 4, 3
        w = np.asarray(srwm_init(jax.random.key(0), heads * d, heads * d_out, heads, scale=2.0,
                                 dtype=jnp.float64))
        assert w.shape == (heads, d_out + 2 * d + 1, d)
        x = np.asarray(jax.random.normal(jax.random.key(1), (heads * d,), jnp.float64))
        y, w_new = srwm_step(jnp.asarray(w), jnp.asarray(x))
        for h in range(heads):
            wh, xh = w[h], x[h * d:(h + 1) * d]
            out = wh @ xh
            k, q, beta = out[d_out:d_out + d], out[d_out + d:d_out + 2 * d], out[-1]
            pk, pq = _softmax(k), _softmax(q)
            v, vbar = wh @ pq, wh @ pk
            lr = 1 / (1 + np.exp(-beta))
            want = wh + lr * np.outer(v - vbar, pk)
            np.testing.assert_allclose(w_new[h], want, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(y[h * d_out:(h + 1) * d_out], out[:d_out], rtol=1e-12)
            np.testing.assert_allclose(np.asarray(w_new[h]) @ pk,
                                       vbar + lr * (pk @ pk) * (v - vbar), rtol=1e-10)
        assert np.abs(np.asarray(w_new) - w).max() > 1e-3  # it does modify itself
        np.testing.assert_allclose(srwm_read(jnp.asarray(w), jnp.asarray(x)), y, rtol=1e-12)
        xs = jax.random.normal(jax.random.key(2), (3, heads * d), jnp.float64)
        ys, w_t = srwm_scan(jnp.asarray(w), xs)
        w_ref = jnp.asarray(w)
        for t in range(3):
            y_t, w_ref = srwm_step(w_ref, xs[t])
            np.testing.assert_allclose(ys[t], y_t, rtol=1e-12)
        np.testing.assert_allclose(w_t, w_ref, rtol=1e-12)


def test_srwm_rejects_bad_shapes():
    with pytest.raises(ValueError, match="heads"):
        srwm_init(jax.random.key(0), 10, 10, heads=3)
    with pytest.raises(ValueError, match="d_model"):
        srwm_init(jax.random.key(0), 0, 4)
    w = srwm_init(jax.random.key(0), 8, 8, heads=2)
    with pytest.raises(ValueError, match="x: expected shape"):
        srwm_step(w, jnp.zeros(7))
    with pytest.raises(ValueError, match="w: expected"):
        srwm_read(jnp.zeros((4, 4)), jnp.zeros(4))


@pytest.mark.slow
def test_self_referential_run_smoke(tmp_path):
    from experiments.self_referential import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "srwm.json").read_text())
    assert (tmp_path / "srwm.png").stat().st_size > 0
    res = saved["runs"]["1"]
    assert len(res["accuracy"]) == 2 and all(0.0 <= a <= 1.0 for a in res["accuracy"])
    assert "| SRWM (self-referential) |" in (tmp_path / "srwm.md").read_text()
