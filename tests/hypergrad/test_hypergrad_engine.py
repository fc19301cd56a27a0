"""Hypergradient mechanics on the one inner engine: online truncations, staggered resets, the
context pull-back (also across a reset), memory in T, masking, compile-once, errors."""

import hypergrad_problems as problems
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import hypergrad as hg
from metaopt import tasks
from metaopt.estimators import Estimator, NoState
from metaopt.inner import InnerProblem, inner_problem, truncation


def test_online_truncations_reproduce_the_full_episode(count_compiles):
    """On a deterministic problem, greedy (and T1-T2) over 3 calls of 2 steps = one 6-step
    episode: the accumulator and its discount continue across calls. The episode ends on the
    third call's last step (2 resets there), the next call starts new episodes; the step
    compiles once."""
    bl, alpha, key = hg.shaban_toy(6), jnp.array([0.5, -1.0]), jax.random.key(3)
    for make in (lambda **kw: hg.greedy(bl, gamma=0.8, **kw), lambda **kw: hg.t1t2(bl, **kw)):
        full = make(num_tasks=2)
        want, _, _ = problems.jit(full.estimate)(key, alpha, full.init(key, alpha))
        online = make(num_tasks=2, unroll_length=2, stagger="none")
        state = online.init(key, alpha)  # split(key)[0] draws the tasks, as in the full mode
        assert isinstance(state, hg.HypergradState)
        step = problems.jit(online.estimate)
        keys = [jax.random.key(100 + i) for i in range(4)]
        with count_compiles() as compiles:
            for i in range(3):
                got, state, metrics = step(keys[i], alpha, state)
                assert float(metrics["resets"]) == (2 if i == 2 else 0)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
            np.testing.assert_array_equal(state.inner.iteration, [0, 0])
            _, state, metrics = step(keys[3], alpha, state)
        assert float(metrics["resets"]) == 0
        np.testing.assert_array_equal(state.inner.iteration, [2, 2])
        assert compiles.count == 1


def test_staggered_tasks_reset_at_their_own_steps_and_restart_the_accumulator():
    """stagger="even": task 1 of 2 starts at iteration 3 of 6, so it resets on the first step
    of the second 2-step call and task 0 on the last step of the third; a reset zeroes the
    task's greedy accumulator (exactly zero at iteration 0, the new episode's terms after)."""
    bl, alpha = hg.shaban_toy(6), jnp.array([0.5, -1.0])
    online = hg.greedy(bl, gamma=0.8, num_tasks=2, unroll_length=2, stagger="even")
    state = online.init(jax.random.key(0), alpha)
    np.testing.assert_array_equal(state.inner.iteration, [0, 3])
    step = problems.jit(online.estimate)
    resets = []
    for i in range(3):
        _, state, metrics = step(jax.random.key(i), alpha, state)
        resets.append(float(metrics["resets"]))
        acc = np.asarray(state.acc)
        for task in range(2):
            it = int(state.inner.iteration[task])
            assert (np.abs(acc[task]).sum() == 0) == (it == 0), (i, task, it)
    assert resets == [0.0, 1.0, 1.0]
    np.testing.assert_array_equal(state.inner.iteration, [0, 3])


def test_context_is_pulled_back_exactly():
    """alpha entering through context(alpha, cfg) gives d/dalpha of the composed problem."""
    base = hg.shaban_toy(8)
    bl = base._replace(context=lambda a, cfg: jnp.sin(a) + a**3 * cfg["c"])
    alpha, key = jnp.array([0.4, -0.3]), jax.random.key(0)
    got, _, _ = problems.jit(hg.rmd(bl).estimate)(key, alpha, NoState())
    k_init, _ = jax.random.split(key)
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


def test_context_of_an_episode_begun_inside_the_segment():
    """Online T1-T2 with episodes of 3 steps and segments of 2 (one task): the second segment
    ends episode 1 on its first step and runs step 1 of episode 2; its estimate is the T1-T2
    hypergradient of episode 2's first step, pulled back through episode 2's context."""
    base = hg.shaban_toy(3)
    ctx_fn = lambda a, cfg: jnp.sin(a) + a**3 * cfg["c"]
    bl = base._replace(context=ctx_fn)
    alpha = jnp.array([0.4, -0.3])
    est = hg.t1t2(bl, num_tasks=1, unroll_length=2, stagger="none")
    problem = hg.as_problem(bl)
    state = est.init(jax.random.key(1), alpha)
    step = problems.jit(est.estimate)
    _, state, _ = step(jax.random.key(2), alpha, state)
    key = jax.random.key(3)
    got, state, metrics = step(key, alpha, state)
    assert float(metrics["resets"]) == 1
    # episode 2 began at the reset on the first step of this segment, from the reset key
    k_task = jax.random.split(key, 1)[0]
    k_first, k_last = jax.random.split(k_task, 2)
    fresh = problem.init(jax.random.split(k_first, 3)[2], alpha)
    cfg, w0 = fresh.cfg, fresh.params

    def t1t2_objective(a):  # d/da L_val(Phi(w0, ctx(a))) with w0 fixed
        ctx = ctx_fn(a, cfg)
        return bl.val_loss(bl.phi(w0, ctx, cfg), ctx, cfg)

    np.testing.assert_allclose(got, jax.grad(t1t2_objective)(alpha), rtol=1e-5)
    assert int(state.inner.iteration[0]) == 1


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_greedy_memory_does_not_grow_with_horizon():
    """Compiled temporary memory: greedy grows only by the per-step PRNG keys (< 48 B/step),
    RMD stores the trajectory (>= |w| floats per step)."""
    alpha, key = jnp.zeros(16), jax.random.key(0)
    temp = {}
    for horizon in (10, 1000):
        bl = problems.identity_jacobian(horizon, dim=64, hdim=16, linear_val=False)
        for est in (hg.greedy(bl, gamma=0.9), hg.rmd(bl)):
            compiled = problems.jit(est.estimate).lower(key, alpha, NoState()).compile()
            temp[est.name, horizon] = compiled.memory_analysis().temp_size_in_bytes
    per_step = {name: (temp[name, 1000] - temp[name, 10]) / 990 for name in ("greedy_0.9", "rmd")}
    assert per_step["greedy_0.9"] < 48, temp
    assert per_step["rmd"] >= 64 * 4, temp


def test_nonfinite_task_is_masked():
    bl = hg.shaban_toy(3)
    bad = bl._replace(phi=lambda w, a, b: jnp.where(b["c"][0] > 0, jnp.nan, 1.0) * w)
    est = hg.greedy(bad, gamma=0.5, num_tasks=8)
    g, _, m = problems.jit(est.estimate)(jax.random.key(0), jnp.zeros(2), NoState())
    assert bool(jnp.all(jnp.isfinite(g))) and 0 < float(m["masked_tasks"]) < 8


def test_bilevel_and_task_problems_are_inner_problems():
    """A Bilevel becomes an InnerProblem on the one engine; the estimators take either."""
    problem = hg.as_problem(hg.shaban_toy(4))
    assert isinstance(problem, InnerProblem) and problem.schedule.max_length == 4
    task = tasks.quadratic_task(tasks.quadratic_family(dim=2).sample(jax.random.key(0)))
    ip = inner_problem(task, lambda lr: optax.sgd(lr), schedule=truncation.constant(4))
    assert hg.as_problem(ip) is ip
    g, _, m = jax.jit(hg.t1t2(ip, num_tasks=2).estimate)(jax.random.key(1), jnp.float32(0.1),
                                                          NoState())
    assert g.shape == () and float(m["vjps"]) == 2.0 and float(g) != 0.0


def test_make_and_bad_arguments():
    bl = hg.shaban_toy(4)
    assert isinstance(hg.make("greedy", bl, gamma=0.5), Estimator)
    cases = [
        (lambda: hg.make("bptt", bl), "name"),
        (lambda: hg.greedy(bl, gamma=1.5), "gamma"),
        (lambda: hg.greedy(bl, gamma=0.9, unroll_length=0), "unroll_length"),
        (lambda: hg.greedy(bl, gamma=0.9, unroll_length=2, horizon=4), "horizon"),
        (lambda: hg.ift(bl, num_terms=-1), "num_terms"),
        (lambda: hg.fo(bl, num_tasks=0), "num_tasks"),
        (lambda: hg.fo(bl, stagger="random"), "stagger"),
        (lambda: hg.rmd(bl, remat="yes"), "remat"),
        (lambda: hg.rmd(bl, unroll_length=2, remat=True), "remat"),
        (lambda: hg.shaban_toy(0), "horizon"),
        (lambda: hg.shaban_toy(5, lr=3.0), "lr"),
        (lambda: hg.task_bilevel(tasks.quadratic_task(tasks.quadratic_family(dim=2).sample(
            jax.random.key(0))), optax.sgd(0.1), horizon=0), "horizon"),
    ]
    for build, field in cases:
        with pytest.raises(ValueError, match=field):
            build()
    with pytest.raises(TypeError, match="problem"):
        hg.fo("not a problem")
