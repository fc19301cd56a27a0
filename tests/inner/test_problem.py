"""The pure inner loop: closed forms, vmap equivalence, resets, staggering, keys."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import tasks
from metaopt.inner import inner_problem, truncation
from metaopt.inner.core import batch_keys, grouped_vmap


def _quadratic_problem(lr=0.3, length=1000, dim=5, **kw):
    fam = tasks.quadratic_family(dim=dim, condition_number=10.0)
    return inner_problem(fam, optax.sgd(lr), schedule=truncation.constant(length),
                         valid=False, **kw)


def test_sgd_scan_matches_closed_form():
    ip = _quadratic_problem(lr=0.3)
    state = ip.init(jax.random.key(0), None)
    end, out = jax.jit(ip.unroll, static_argnums=3)(jax.random.key(1), None, state, 25)
    a, c, w0 = state.cfg.hessian(), state.cfg.center, state.params
    m = jnp.eye(5) - 0.3 * a
    ws = [c + jnp.linalg.matrix_power(m, t) @ (w0 - c) for t in range(26)]
    np.testing.assert_allclose(end.params, ws[25], rtol=0, atol=2e-6)
    want = [0.5 * (w - c) @ a @ (w - c) for w in ws[:25]]
    np.testing.assert_allclose(out.loss, want, rtol=2e-5, atol=1e-7)
    assert int(end.iteration) == 25 and not bool(out.done.any())


def test_unroll_equals_repeated_steps():
    ip = _quadratic_problem(length=4)
    state = ip.init(jax.random.key(0), None)
    end, out = ip.unroll(jax.random.key(7), None, state, 9)
    s, step = state, jax.jit(ip.step)
    for t, k in enumerate(jax.random.split(jax.random.key(7), 9)):
        s, o = step(k, None, s)
        np.testing.assert_allclose(o.loss, out.loss[t], rtol=1e-6)  # one step vs fused scan
        assert bool(o.done) == bool(out.done[t])
    np.testing.assert_allclose(s.params, end.params, rtol=1e-6)


def _digits_problem(length, meta_loss="valid", opt=None):
    task = tasks.mlp_classifier(batch_size=32)
    return inner_problem(task, opt or optax.adam(3e-3), schedule=truncation.constant(length),
                         valid=meta_loss == "valid")


def test_vmapped_batch_equals_tasks_one_by_one():
    ip = _digits_problem(length=6)
    states = ip.init_batch(jax.random.key(0), None, 3, stagger="even")
    keys = jax.random.split(jax.random.key(1), 3)
    b_end, b_out = jax.jit(ip.unroll_batch, static_argnums=3)(keys, None, states, 14)
    assert b_out.loss.shape == (3, 14) and int(b_out.done.sum()) >= 6
    unroll = jax.jit(ip.unroll, static_argnums=3)
    for i in range(3):
        s_i = jax.tree.map(lambda x, i=i: x[i], states)
        end, out = unroll(keys[i], None, s_i, 14)
        np.testing.assert_array_equal(out.done, b_out.done[i])
        np.testing.assert_array_equal(out.iteration, b_out.iteration[i])
        np.testing.assert_allclose(out.loss, b_out.loss[i], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.meta_loss, b_out.meta_loss[i], rtol=1e-5, atol=1e-6)
        b_i = jax.tree.map(lambda x, i=i: x[i], b_end)
        for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(b_i)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_theta_batched_equals_per_task_theta():
    fam = tasks.quadratic_family(dim=3)
    ip = inner_problem(fam, lambda th: optax.sgd(jnp.exp(th)), schedule=truncation.constant(50),
                       valid=False)
    thetas = jnp.log(jnp.array([0.1, 0.5]))
    states = ip.init_batch(jax.random.key(0), thetas, 2, theta_batched=True)
    keys = jax.random.split(jax.random.key(1), 2)
    _, out = ip.unroll_batch(keys, thetas, states, 10, theta_batched=True)
    for i in range(2):
        s_i = jax.tree.map(lambda x, i=i: x[i], states)
        _, o = ip.unroll(keys[i], thetas[i], s_i, 10)
        np.testing.assert_allclose(o.loss, out.loss[i], rtol=1e-6)


def test_grouped_scan_equals_one_vmap():
    """``scan_batch`` with the batch mapped in 2 or 3 slices per step gives the one-``vmap``
    trajectory (per-task theta, resets inside the unroll); bad ``groups`` are refused."""
    ip = _digits_problem(length=5)
    thetas = None
    states = ip.init_batch(jax.random.key(0), thetas, 6, stagger="even")
    keys = batch_keys(jax.random.split(jax.random.key(1), 6), 12)
    scan = jax.jit(ip.scan_batch, static_argnames="groups")
    ref_end, _, ref_out = scan(keys, thetas, states, groups=1)
    assert int(ref_out.done.sum()) >= 12
    for groups in (2, 3):
        end, _, out = scan(keys, thetas, states, groups=groups)
        np.testing.assert_array_equal(out.done, ref_out.done)
        np.testing.assert_allclose(out.loss, ref_out.loss, rtol=1e-6, atol=1e-7)
        for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(ref_end), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="groups: must divide the batch size 6, got 4"):
        ip.scan_batch(keys, thetas, states, groups=4)
    with pytest.raises(ValueError, match="groups"):
        ip.scan_batch(keys, thetas, states, groups=0)


def test_grouped_vmap_slices_only_mapped_axes():
    """In-axes trees with ``None`` leaves (a shared weight beside per-task factors)."""
    def fn(x, tree):
        return x * tree["shared"].sum() + tree["per_task"], tree["per_task"] ** 2

    x = jnp.arange(8.0).reshape(4, 2)
    tree = {"shared": jnp.array([1.0, 2.0, 3.0]), "per_task": jnp.arange(8.0).reshape(4, 2) / 7}
    axes = (0, {"shared": None, "per_task": 0})
    want = jax.vmap(fn, axes)(x, tree)
    got = grouped_vmap(fn, axes, 2)(x, tree)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resets_exactly_at_constant_boundaries_with_even_stagger():
    length, n_tasks, n = 5, 4, 23
    ip = _quadratic_problem(length=length)
    states = ip.init_batch(jax.random.key(0), None, n_tasks, stagger="even")
    offsets = [i * length // n_tasks for i in range(n_tasks)]
    np.testing.assert_array_equal(states.iteration, offsets)
    _, out = ip.unroll_batch(jax.random.split(jax.random.key(1), n_tasks), None, states, n)
    for i, s0 in enumerate(offsets):
        want_iter = [(s0 + t) % length for t in range(n)]
        np.testing.assert_array_equal(out.iteration[i], want_iter)
        np.testing.assert_array_equal(out.done[i], [it == length - 1 for it in want_iter])
    assert not bool(out.nonfinite.any())


def test_reset_restarts_from_a_fresh_task():
    ip = _quadratic_problem(lr=0.5, length=3)
    state = ip.init(jax.random.key(0), None)
    end, out = ip.unroll(jax.random.key(1), None, state, 3)
    assert bool(out.done[2]) and int(end.iteration) == 0
    # the reset state is exactly init() under step 2's reset key: a new task, params, length
    reset_key = jax.random.split(jax.random.split(jax.random.key(1), 3)[2], 3)[2]
    fresh = ip.init(reset_key, None)
    for a, b in zip(jax.tree.leaves(end), jax.tree.leaves(fresh)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(end.cfg.center, state.cfg.center)


def test_log_uniform_episode_lengths():
    sched = truncation.log_uniform(2, 40)
    lengths = jax.vmap(sched.sample)(jax.random.split(jax.random.key(0), 4000))
    assert int(lengths.min()) == 2 and int(lengths.max()) == 40
    # log-uniform: P(L <= 6) = log(7/2)/log(41/2) ~= 0.417
    frac = float(jnp.mean(lengths <= 6))
    assert abs(frac - np.log(3.5) / np.log(20.5)) < 0.03
    fam = tasks.quadratic_family(dim=2)
    ip = inner_problem(fam, optax.sgd(0.1), schedule=sched, valid=False)
    state = ip.init(jax.random.key(1), None)
    end, out = ip.unroll(jax.random.key(2), None, state, 200)
    it, done = np.asarray(out.iteration), np.asarray(out.done)
    ends = np.flatnonzero(done)
    assert len(ends) >= 3
    assert ends[0] + 1 == int(state.length)  # first episode lasts exactly its sampled length
    for a, b in zip(ends[:-1], ends[1:]):  # each later episode counts 0..L-1 with 2 <= L <= 40
        np.testing.assert_array_equal(it[a + 1 : b + 1], np.arange(b - a))
        assert 2 <= b - a <= 40


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_stagger_modes():
    ip = _quadratic_problem(length=10)
    none = ip.init_batch(jax.random.key(0), None, 8, stagger="none")
    np.testing.assert_array_equal(none.iteration, np.zeros(8))
    uni = ip.init_batch(jax.random.key(0), None, 64, stagger="uniform")
    assert int(uni.iteration.min()) >= 0 and int(uni.iteration.max()) <= 9
    assert len(np.unique(uni.iteration)) >= 8
    with pytest.raises(ValueError, match="stagger.*allowed values.*none.*even.*uniform"):
        ip.init_batch(jax.random.key(0), None, 2, stagger="random")


def test_same_key_same_result_different_key_differs():
    task = tasks.mlp_classifier()
    b1, b2 = task.batch(jax.random.key(3), "train"), task.batch(jax.random.key(3), "train")
    b3 = task.batch(jax.random.key(4), "train")
    np.testing.assert_array_equal(b1["x"], b2["x"])
    assert not np.array_equal(b1["idx"], b3["idx"])
    ip = _digits_problem(length=8)
    state = ip.init(jax.random.key(0), None)
    unroll = jax.jit(ip.unroll, static_argnums=3)
    _, o1 = unroll(jax.random.key(5), None, state, 12)
    _, o2 = unroll(jax.random.key(5), None, state, 12)
    _, o3 = unroll(jax.random.key(6), None, state, 12)
    np.testing.assert_array_equal(o1.loss, o2.loss)
    np.testing.assert_array_equal(o1.meta_loss, o2.meta_loss)
    assert not np.array_equal(o1.loss, o3.loss)
    s1, s2 = ip.init(jax.random.key(0), None), ip.init(jax.random.key(1), None)
    assert not np.array_equal(s1.params["Dense_0"]["kernel"], s2.params["Dense_0"]["kernel"])


def test_adam_trains_digits_mlp_to_90_percent_test_accuracy():
    data = tasks.load_digits()
    task = tasks.mlp_classifier(data, batch_size=128)
    ip = inner_problem(task, optax.adam(1e-2), schedule=truncation.constant(10_000),
                       valid=False)
    state = ip.init(jax.random.key(0), None)
    end, out = jax.jit(ip.unroll, static_argnums=3)(jax.random.key(1), None, state, 300)
    acc = tasks.evaluate(task, end.params, data, "test")["accuracy"]
    assert acc >= 0.90, acc
    assert float(out.loss[-20:].mean()) < 0.3 * float(out.loss[:5].mean())


def test_nonfinite_loss_resets_and_is_counted():
    ip = _quadratic_problem(lr=50.0, length=1000)  # diverges: |1 - 50 lambda| >> 1
    state = ip.init(jax.random.key(0), None)
    end, out = ip.unroll(jax.random.key(1), None, state, 60)
    assert int(out.nonfinite.sum()) >= 1
    np.testing.assert_array_equal(out.done, out.nonfinite)  # only non-finite resets here
    first = int(np.argmax(np.asarray(out.nonfinite)))
    assert int(out.iteration[first + 1]) == 0  # the next step starts a fresh episode
    # ... drawn from that step's reset key: its first loss is the fresh task's initial loss
    step_key = jax.random.split(jax.random.key(1), 60)[first]
    fresh = ip.init(jax.random.split(step_key, 3)[2], None)
    fam = tasks.quadratic_family(dim=5, condition_number=10.0)
    want = fam.task(fresh.cfg).loss(fresh.params, {})
    np.testing.assert_allclose(out.loss[first + 1], want, rtol=1e-5)
    assert np.isfinite(float(want))


def test_hparams_enter_the_loss():
    task = tasks.mlp_classifier(batch_size=16)
    n_train = tasks.load_digits().size("train")
    ip = inner_problem(task, optax.sgd(0.1), schedule=truncation.constant(100),
                       hparams_fn=lambda th: {"example_logits": th})
    state = ip.init(jax.random.key(0), jnp.zeros(n_train))
    _, out_muted = ip.step(jax.random.key(1), jnp.full((n_train,), -1e4), state)
    _, out_half = ip.step(jax.random.key(1), jnp.zeros(n_train), state)
    assert float(out_muted.loss) == 0.0  # every training example has weight sigmoid(-1e4) = 0
    ref = float(task.loss(state.params, task.batch(jax.random.split(jax.random.key(1), 3)[0],
                                                   "train")))
    np.testing.assert_allclose(float(out_half.loss), 0.5 * ref, rtol=1e-6)
    assert float(out_muted.meta_loss) > 0.0  # validation batches are never weighted


def test_bad_input_names_the_field():
    fam = tasks.quadratic_family(dim=2)
    with pytest.raises(TypeError, match="valid: expected True or False"):
        inner_problem(fam, optax.sgd(0.1), schedule=truncation.constant(5), valid="yes")
    with pytest.raises(ValueError, match="feed_valid_loss: needs valid=True"):
        inner_problem(fam, optax.sgd(0.1), schedule=truncation.constant(5), valid=False,
                      feed_valid_loss=True)
    with pytest.raises(ValueError, match="length: must be a positive integer"):
        truncation.constant(0)
    with pytest.raises(ValueError, match="min_length"):
        truncation.log_uniform(10, 5)
    with pytest.raises(TypeError, match="optimizer"):
        inner_problem(fam, "adam", schedule=truncation.constant(5))


class _DuckQuadratic:
    """A task written as a plain class (no metaopt.tasks.Task): duck typing."""

    name = "duck"

    def __init__(self, scale):
        self.scale = scale

    def init(self, key):
        return jax.random.normal(key, (3,))

    def loss(self, w, batch, hparams=None):
        return 0.5 * self.scale * jnp.sum(w**2)

    def batch(self, key, split):
        return {}


class _DuckFamily:
    name = "duck_family"

    def sample(self, key):
        return jax.random.uniform(key, (), minval=0.5, maxval=1.5)

    def task(self, cfg):
        return _DuckQuadratic(cfg)


def test_duck_typed_tasks_and_families_are_accepted():
    """Objects with the contract's functions run like Task / TaskFamily (same numbers)."""
    duck = _DuckFamily()
    typed = tasks.TaskFamily(sample=duck.sample, name="typed", task=lambda cfg: tasks.Task(
        init=_DuckQuadratic(cfg).init, loss=_DuckQuadratic(cfg).loss, batch=lambda k, s: {}))
    outs = []
    for fam in (duck, typed, _DuckQuadratic(1.0)):
        ip = inner_problem(fam, optax.sgd(0.1), schedule=truncation.constant(4), valid=False)
        state = ip.init_batch(jax.random.key(0), None, 3)
        outs.append(ip.unroll_batch(jax.random.split(jax.random.key(1), 3), None, state, 6)[1])
    np.testing.assert_allclose(outs[0].loss, outs[1].loss, rtol=1e-6)
    assert not np.allclose(outs[0].loss, outs[2].loss)  # the family's scales are used
    with pytest.raises(TypeError, match="task: expected a metaopt.tasks.Task or TaskFamily"):
        inner_problem(object(), optax.sgd(0.1), schedule=truncation.constant(4))
