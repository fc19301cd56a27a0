"""Non-finite tasks, the outer step's safety valves, and argument validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import quadratic_reference as Q

from metaopt import estimators as E
from metaopt.estimators.base import Estimator, NoState
from metaopt.outer import outer_trainer
from metaopt.tasks.base import Task

THETA = {"log_lr": jnp.asarray(np.log(0.5), jnp.float32)}


def _blowing_up_problem(length=20, scale=float("inf")):
    """About half of the tasks have eigenvalues x ``scale``: with ``inf`` their loss is
    non-finite from the first step (their gradients NaN), so they reset, and blow up again;
    with ``1e4`` they overflow float32 after a few steps."""
    return Q.problem(Q.key_bit_family(scale), length)


@pytest.mark.parametrize("name,kwargs", [
    ("full_backprop", dict(num_tasks=8)),
    ("tbptt", dict(num_tasks=8, unroll_length=10, stagger="none")),
    ("pes", dict(num_tasks=8, sigma=0.1, unroll_length=10, stagger="none")),
])
def test_nonfinite_tasks_are_masked_and_counted(name, kwargs):
    """Two calls inside the first 20-step episode: the initially healthy tasks stay healthy,
    the bad ones blow up at every step (and reset into new random tasks)."""
    est = E.make(name, _blowing_up_problem(), **kwargs)
    state = jax.jit(est.init)(jax.random.PRNGKey(0), THETA)
    step = jax.jit(est.estimate)
    for i, key in enumerate(jax.random.split(jax.random.PRNGKey(1), 2)):
        grad, state, metrics = step(key, THETA, state)
        g = float(grad["log_lr"])
        assert np.isfinite(g), name
        # the healthy tasks' gradients are O(1) (and negative, lr 0.5 being below the optimum)
        assert abs(g) < (5.0 if name == "pes" else 1.0) and (name == "pes" or g < 0), (name, g)
        assert float(metrics["masked_tasks"]) < 8 and np.isfinite(float(metrics["meta_loss"]))
        if i == 0:  # (by the second call most bad slots have drawn healthy tasks)
            assert float(metrics["nonfinite_steps"]) > 0 and float(metrics["masked_tasks"]) > 0


def _cliff_problem():
    """``L(w) = -w`` (so SGD walks ``w_t = t * lr``) until ``w > 5.5``, where it is ``inf``:
    the half with the larger lr falls off the cliff first unless both reach it on one step."""

    def loss(w, batch, hparams=None):
        return jnp.where(w[0] > 5.5, jnp.inf, -w[0])

    task = Task(init=lambda key: jnp.zeros(1), loss=loss, batch=lambda key, split: {})
    return Q.problem(task, 100)


def test_pes_resynchronizes_split_pairs_with_a_zero_accumulator():
    est = E.pes(_cliff_problem(), num_tasks=16, sigma=0.1, unroll_length=10, stagger="none")
    theta = {"log_lr": jnp.zeros(())}
    state = jax.jit(est.init)(jax.random.PRNGKey(0), theta)
    grad, state, metrics = jax.jit(est.estimate)(jax.random.PRNGKey(1), theta, state)
    xi = np.asarray(state.xi["log_lr"])
    restarted = xi == 0.0
    assert 0 < restarted.sum() < 16 and float(metrics["restarted_tasks"]) == restarted.sum()
    # every pair fell off the cliff in this truncation: its first segment is masked
    assert float(metrics["masked_tasks"]) == 16 and np.isfinite(float(grad["log_lr"]))
    # a restarted pair continues from one state (the positive half's) in both halves; the
    # others reset in step (xi = eps) and their halves differ (different learning rates)
    pos, neg = np.asarray(state.pos.params), np.asarray(state.neg.params)
    np.testing.assert_array_equal(pos[restarted], neg[restarted])
    np.testing.assert_array_equal(np.asarray(state.pos.iteration),
                                  np.asarray(state.neg.iteration))
    assert np.all(pos[~restarted] != neg[~restarted]) and np.all(np.abs(xi[~restarted]) > 0)


def _nan_once_estimator():
    """Returns a NaN gradient on the 2nd call, 1.0 otherwise (state counts the calls)."""

    def estimate(key, theta, count):
        g = jnp.where(count == 1, jnp.nan, 1.0)
        return {"log_lr": g}, count + 1, {"meta_loss": jnp.asarray(0.0)}

    return Estimator(init=lambda key, theta: jnp.zeros((), jnp.int32), estimate=estimate)


def test_outer_step_skips_nonfinite_gradients_and_counts_them():
    trainer = outer_trainer(_nan_once_estimator(), optax.sgd(0.1, momentum=0.5))
    state = trainer.init(jax.random.PRNGKey(0), THETA)
    step = jax.jit(trainer.step)
    thetas, skipped = [], []
    for key in jax.random.split(jax.random.PRNGKey(1), 3):
        state, m = step(key, state)
        thetas.append(float(state.theta["log_lr"]))
        skipped.append(float(m["skipped"]))
    t0 = float(THETA["log_lr"])
    # momentum 0.5: steps 0.1, (skipped), then 0.1 * (1 + 0.5): the NaN never reached the trace
    np.testing.assert_allclose(thetas, [t0 - 0.1, t0 - 0.1, t0 - 0.25], rtol=1e-6)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state.opt_state))
    assert skipped == [0.0, 1.0, 0.0] and int(state.skipped) == 1 and int(state.step) == 3


def test_outer_step_clips_the_gradient_norm():
    est = Estimator(init=lambda k, t: NoState(),
                    estimate=lambda k, t, s: ({"a": jnp.array([30.0, 40.0])}, s, {}))
    trainer = outer_trainer(est, optax.sgd(1.0), clip_norm=5.0)
    state = trainer.init(jax.random.PRNGKey(0), {"a": jnp.zeros(2)})
    state, m = jax.jit(trainer.step)(jax.random.PRNGKey(1), state)
    np.testing.assert_allclose(state.theta["a"], [-3.0, -4.0], rtol=1e-6)
    assert float(m["grad_norm"]) == pytest.approx(50.0)


def test_outer_step_averages_over_a_mapped_axis():
    est = Estimator(init=lambda k, t: NoState(),
                    estimate=lambda k, t, s: ({"a": jax.random.normal(k, ())}, s,
                                              {"meta_loss": jnp.asarray(1.0),
                                               "inner_steps": jnp.asarray(10.0)}))
    trainer = outer_trainer(est, optax.sgd(1.0), axis_name="tasks")
    state = trainer.init(jax.random.PRNGKey(0), {"a": jnp.zeros(())})
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    states, m = jax.vmap(trainer.step, (0, None), axis_name="tasks")(keys, state)
    mean = float(jnp.mean(jax.vmap(lambda k: jax.random.normal(k, ()))(keys)))
    np.testing.assert_allclose(states.theta["a"], -mean * np.ones(4), rtol=1e-5)
    assert float(m["inner_steps"][0]) == 40.0 and float(m["meta_loss"][0]) == 1.0


def test_bad_arguments_raise_value_errors_naming_the_field():
    prob = Q.problem(Q.fixed_task(), 20)
    train_prob = Q.problem(Q.fixed_task(), 20, meta_loss="train")
    cases = [
        (lambda: E.pes(prob, num_tasks=4, sigma=0.1, unroll_length=5, meta_loss="mean"),
         "meta_loss"),
        (lambda: E.pes(prob, num_tasks=0, sigma=0.1, unroll_length=5), "num_tasks"),
        (lambda: E.pes(prob, num_tasks=4, sigma=-1.0, unroll_length=5), "sigma"),
        (lambda: E.truncated_es(prob, num_tasks=4, sigma=0.1, unroll_length=2.5),
         "unroll_length"),
        (lambda: E.truncated_backprop(prob, num_tasks=4, unroll_length=5, stagger="random"),
         "stagger"),
        (lambda: E.full_backprop(prob, num_tasks=4, checkpoint_every=3), "checkpoint_every"),
        (lambda: E.full_backprop(train_prob, num_tasks=4, meta_loss="valid"), "meta_loss"),
        (lambda: E.antithetic_es(prob, num_tasks=4, sigma=0.1, horizon=0), "horizon"),
        (lambda: E.make("reinforce", prob), "estimator"),
        (lambda: outer_trainer(E.full_backprop(prob, num_tasks=1), optax.sgd(1.0),
                               clip_norm=0.0), "clip_norm"),
    ]
    for build, field in cases:
        with pytest.raises(ValueError, match=field):
            build()
    with pytest.raises(TypeError, match="problem"):
        E.pes("not a problem", num_tasks=4, sigma=0.1, unroll_length=5)
    with pytest.raises(TypeError, match="optimizer"):
        outer_trainer(E.full_backprop(prob, num_tasks=1), "adam")


@pytest.mark.parametrize("name,kwargs", [
    ("tbptt", dict(unroll_length=5)),
    ("pes", dict(sigma=0.1, unroll_length=5)),
    ("greedy", dict(gamma=0.9, unroll_length=5)),
    ("ift", dict(num_terms=3, unroll_length=5)),
])
def test_tasks_split_over_a_mapped_axis_compute_the_one_device_result(name, kwargs):
    """2 "devices" (a vmap with axis_name) x 2 tasks == 1 device x 4 tasks: same states,
    same gradients (per-task randomness is drawn for the whole batch and sliced)."""
    prob = Q.problem(Q.fixed_task(), 12)  # staggered starts make the 4 tasks differ
    one = E.make(name, prob, num_tasks=4, **kwargs)
    two = E.make(name, prob, num_tasks=2, axis_name="tasks", **kwargs)
    k0, *keys = jax.random.split(jax.random.PRNGKey(0), 4)
    s1 = jax.jit(one.init)(k0, THETA)
    s2 = jax.vmap(two.init, (None, None), axis_size=2, axis_name="tasks")(k0, THETA)
    est1 = jax.jit(one.estimate)
    est2 = jax.jit(jax.vmap(two.estimate, (None, None, 0), axis_name="tasks"))
    for key in keys:
        g1, s1, _ = est1(key, THETA, s1)
        g2, s2, _ = est2(key, THETA, s2)
        np.testing.assert_allclose(np.asarray(g2["log_lr"]), float(g1["log_lr"]) * np.ones(2),
                                   rtol=1e-5, atol=1e-7)
    merged = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), s2)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7), merged, s1)


def test_outer_step_clips_huge_finite_gradients_without_overflow():
    """||g||^2 overflows float32 for |g| ~ 1e20; clipping must still give a norm-c step."""
    big = {"log_lr": jnp.asarray(3e20, jnp.float32), "w": jnp.asarray([-4e20, 0.0], jnp.float32)}
    est = Estimator(init=lambda key, theta: jnp.zeros((), jnp.int32),
                    estimate=lambda key, theta, s: (big, s, {"meta_loss": jnp.float32(0.0)}))
    theta = {"log_lr": jnp.float32(0.0), "w": jnp.zeros(2, jnp.float32)}
    trainer = outer_trainer(est, optax.sgd(1.0), clip_norm=2.0)
    state, m = jax.jit(trainer.step)(jax.random.PRNGKey(0), trainer.init(jax.random.PRNGKey(0),
                                                                         theta))
    np.testing.assert_allclose(float(m["grad_norm"]), 5e20, rtol=1e-5)
    np.testing.assert_allclose(state.theta["log_lr"], -2.0 * 3 / 5, rtol=1e-5)
    np.testing.assert_allclose(state.theta["w"], [2.0 * 4 / 5, 0.0], rtol=1e-5, atol=1e-7)
    assert float(m["skipped"]) == 0.0
