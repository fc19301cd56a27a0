"""Estimator mechanics: online truncations, the context pull-back, memory in T, jit, errors."""

import hypergrad_problems as problems
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import hypergrad as hg
from metaopt import tasks
from metaopt.estimators import Estimator, NoState


def test_online_truncations_reproduce_the_full_episode():
    """On a deterministic problem, greedy (and T1-T2) over 3 calls of 2 steps = one
    6-step episode: the accumulator and its discount continue across calls; then a reset."""
    bl, alpha, key = hg.shaban_toy(6), jnp.array([0.5, -1.0]), jax.random.key(3)
    k_init = jax.random.split(key)[0]
    for make in (lambda **kw: hg.greedy(bl, gamma=0.8, **kw), lambda **kw: hg.t1t2(bl, **kw)):
        full = make(num_tasks=2)
        want, _, _ = problems.jit(full.estimate)(key, alpha, full.init(key, alpha))
        online = make(num_tasks=2, unroll_length=2)
        state = online.init(k_init, alpha)
        assert isinstance(state, hg.HypergradState)
        step = problems.jit(online.estimate)
        for i in range(3):
            got, state, metrics = step(jax.random.key(100 + i), alpha, state)
            assert float(metrics["resets"]) == 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
        assert int(state.t) == 6
        _, state, metrics = step(jax.random.key(9), alpha, state)
        assert float(metrics["resets"]) == 2 and int(state.t) == 2
        assert step._cache_size() == 1


def test_context_is_pulled_back_exactly():
    """alpha entering through context(alpha, cfg) gives d/dalpha of the composed problem."""
    base = hg.shaban_toy(8)
    bl = base._replace(context=lambda a, cfg: jnp.sin(a) + a**3 * cfg["c"])
    alpha, key = jnp.array([0.4, -0.3]), jax.random.key(0)
    got, _, _ = problems.jit(hg.rmd(bl).estimate)(key, alpha, NoState())
    k_init, k_unroll = jax.random.split(key)
    cfg, w0 = bl.init(jax.random.split(k_init, 1)[0], alpha)

    def objective(a):
        ctx, w = bl.context(a, cfg), w0
        for _ in range(8):
            w = bl.phi(w, ctx, cfg)
        return bl.val_loss(w, ctx, cfg)

    np.testing.assert_allclose(got, jax.grad(objective)(alpha), rtol=1e-5)
    g_greedy, _, _ = problems.jit(hg.greedy(bl, gamma=0.9).estimate)(key, alpha, NoState())
    g_plain, _, _ = problems.jit(hg.greedy(base, gamma=0.9).estimate)(key, alpha, NoState())
    assert not np.allclose(g_greedy, g_plain)  # the context changed the problem, and is used


def test_greedy_memory_does_not_grow_with_horizon():
    """Compiled temporary memory: greedy grows only by the per-step PRNG keys (< 32 B/step),
    RMD stores the trajectory (>= |w| floats per step)."""
    alpha, key = jnp.zeros(16), jax.random.key(0)
    temp = {}
    for horizon in (10, 1000):
        bl = problems.identity_jacobian(horizon, dim=64, hdim=16, linear_val=False)
        for est in (hg.greedy(bl, gamma=0.9), hg.rmd(bl)):
            compiled = problems.jit(est.estimate).lower(key, alpha, NoState()).compile()
            temp[est.name, horizon] = compiled.memory_analysis().temp_size_in_bytes
    per_step = {name: (temp[name, 1000] - temp[name, 10]) / 990 for name in ("greedy_0.9", "rmd")}
    assert per_step["greedy_0.9"] < 32, temp
    assert per_step["rmd"] >= 64 * 4, temp


def test_nonfinite_task_is_masked():
    bl = hg.shaban_toy(3)
    bad = bl._replace(phi=lambda w, a, b: jnp.where(b["c"][0] > 0, jnp.nan, 1.0) * w)
    est = hg.greedy(bad, gamma=0.5, num_tasks=8)
    g, _, m = problems.jit(est.estimate)(jax.random.key(0), jnp.zeros(2), NoState())
    assert bool(jnp.all(jnp.isfinite(g))) and 0 < float(m["masked_tasks"]) < 8


def test_make_and_bad_arguments():
    bl = hg.shaban_toy(4)
    assert isinstance(hg.make("greedy", bl, gamma=0.5), Estimator)
    assert set(hg.HYPERGRADS) == {"fo", "t1t2", "greedy", "ift", "rmd"}
    cases = [
        (lambda: hg.make("bptt", bl), "name"),
        (lambda: hg.greedy(bl, gamma=1.5), "gamma"),
        (lambda: hg.greedy(bl, gamma=0.9, unroll_length=3), "unroll_length"),
        (lambda: hg.ift(bl, num_terms=-1), "num_terms"),
        (lambda: hg.fo(bl, num_tasks=0), "num_tasks"),
        (lambda: hg.rmd(bl, remat="yes"), "remat"),
        (lambda: hg.shaban_toy(0), "horizon"),
        (lambda: hg.shaban_toy(5, lr=3.0), "lr"),
        (lambda: hg.task_bilevel(tasks.quadratic_task(tasks.quadratic_family(dim=2).sample(
            jax.random.key(0))), optax.sgd(0.1), horizon=0), "horizon"),
    ]
    for build, field in cases:
        with pytest.raises(ValueError, match=field):
            build()
    with pytest.raises(TypeError, match="bilevel"):
        hg.fo("not a bilevel")
