"""The self-referential weight matrix (metaopt.tasks.srwm, Irie et al. 2022) and its few-shot
experiment."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks.srwm import srwm_init, srwm_read, srwm_route, srwm_scan, srwm_step


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


def test_srwm_route_reads_the_chosen_coordinates():
    """float64: srwm_route adds gain diag(mask) to the key and query rows only; from a routed
    zero matrix the step's key is gain * key_cols * x and its query gain * query_cols * x (the
    step written out with numpy), so the stored value depends on the query coordinates."""
    with jax.enable_x64(True):
        heads, d, d_out, gain = 2, 5, 3, 2.5
        kc = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
        w0 = srwm_init(jax.random.key(3), heads * d, heads * d_out, heads, dtype=jnp.float64)
        routed = np.asarray(srwm_route(w0, kc, 1 - kc, gain))
        want = np.asarray(w0).copy()
        for h in range(heads):
            want[h, d_out:d_out + d] += gain * np.diag(kc)
            want[h, d_out + d:d_out + 2 * d] += gain * np.diag(1 - kc)
        np.testing.assert_allclose(routed, want, rtol=0, atol=1e-15)
        # W^y = 1 everywhere, W^k, W^q routed from zero, beta row zero: sigmoid(0) = 1/2.
        w = np.zeros((heads, d_out + 2 * d + 1, d))
        w[:, :d_out] = 1.0
        w = np.asarray(srwm_route(jnp.asarray(w), kc, 1 - kc, gain))
        x = np.asarray(jax.random.normal(jax.random.key(4), (heads * d,), jnp.float64))
        _, w_new = srwm_step(jnp.asarray(w), jnp.asarray(x))
        for h in range(heads):
            xh = x[h * d:(h + 1) * d]
            pk, pq = _softmax(gain * kc * xh), _softmax(gain * (1 - kc) * xh)
            np.testing.assert_allclose(w_new[h], w[h] + 0.5 * np.outer(w[h] @ (pq - pk), pk),
                                       rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="key_cols"):
        srwm_route(w0, np.ones(4), np.ones(5))


def test_routed_srwm_leaves_chance_where_the_unrouted_one_stays():  # ~18 s: the direction smoke
    """The saddle of the README, on 5-way 1-shot digits with a small frozen embedding: in 150
    outer steps the routed SRWM (keys read the features, queries the label slots) gets its
    meta-training query loss (mean of the last 20 steps) below chance (ln 5 = 1.609) by more
    than 0.3, while the same model from a random W_0 (route=0) stays within 0.05 of it."""
    import dataclasses

    from experiments import hypergrad_common as common
    from experiments.self_referential import problem, run
    from metaopt import hypergrad as hg
    from metaopt.outer import outer_trainer
    from metaopt.tasks.fewshot import class_pools

    pools = jnp.asarray(class_pools(40)[:5])

    def last_losses(m):
        bl, _ = problem.srwm_bilevel(pools, m, shots=1, queries=5)
        trainer = outer_trainer(hg.rmd(bl, num_tasks=16), problem.outer_optimizer(m, 3e-3))

        def train(key):
            state = trainer.init(key, problem.init_alpha(key, m))
            _, metrics = jax.lax.scan(lambda st, k: trainer.step(k, st), state,
                                      jax.random.split(key, 150))
            return metrics["meta_loss"][-20:].mean()

        return float(jax.jit(train, compiler_options=common.FAST_COMPILE)(jax.random.key(0)))

    routed = dataclasses.replace(run.VARIANTS["final"], channels=(4, 4))
    with_route, without = last_losses(routed), last_losses(dataclasses.replace(routed, route=0.0))
    assert with_route < np.log(5) - 0.3  # 1.17 when written
    assert without > np.log(5) - 0.05  # 1.595 when written
