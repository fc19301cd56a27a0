"""The mixture families (cnn, autoencoder, logistic, sequence): the family contract (arrays-only
configs, one pytree structure, jit + vmap), and each family's maths against a hand computation.
Full-size families under ``inner_problem`` are the slow test at the end."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import tasks
from metaopt.tasks.cnn_family import PatchConv

# Small members, so that each contract test compiles in a second or two.
SMALL = {
    "cnn_family": {"channels": (4,), "batch_size": 8},
    "autoencoder_family": {"hidden": (8,), "bottleneck": 3, "batch_size": 8},
    "logistic_family": {"batch_size": 8, "init_scale": 0.1},
    "sequence_family": {"vocab_size": 4, "length": 5, "hidden": 6, "batch_size": 4},
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_family_contract_arrays_structure_jit_vmap(name):
    fam = tasks.make(name, **SMALL[name])
    key = jax.random.key(0)

    def structure(k):
        task = fam.task(fam.sample(k))
        return fam.sample(k), task.init(key), task.batch(key, "train"), task.batch(key, "valid")

    shapes = [jax.eval_shape(structure, k) for k in jax.random.split(jax.random.key(1), 3)]
    assert all(s == shapes[0] for s in shapes)
    assert all(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree.leaves(shapes[0][0]))

    @jax.jit
    @jax.vmap
    def loss_and_grad(k):
        k_cfg, k_init, k_batch = jax.random.split(k, 3)
        task = fam.task(fam.sample(k_cfg))
        return jax.value_and_grad(task.loss)(task.init(k_init), task.batch(k_batch, "train"))

    losses, grads = loss_and_grad(jax.random.split(key, 4))
    assert losses.shape == (4,) and np.all(np.isfinite(losses))
    assert np.unique(np.asarray(losses)).size == 4  # the tasks differ
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


@pytest.mark.slow
def test_patch_conv_equals_flax_conv():
    for h, w, stride in [(8, 8, 1), (8, 8, 2), (7, 5, 2)]:
        x = jax.random.normal(jax.random.key(0), (2, h, w, 3))
        conv = PatchConv(5, stride, nn.initializers.lecun_normal())
        params = conv.init(jax.random.key(1), x)
        want = nn.Conv(5, (3, 3), strides=(stride, stride)).apply(params, x)
        np.testing.assert_allclose(conv.apply(params, x), want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # ~15-20 s of compiling on 2 cores (default suite < 10 min)
def test_cnn_output_shape_and_log10_at_zero_head():
    fam = tasks.make("cnn_family", channels=(4, 6), head="flatten", batch_size=16)

    @jax.jit
    def run(key):
        task = fam.task(fam.sample(key))
        params = task.init(key)
        b = task.batch(key, "train")
        zero = {**params, "Dense_0": jax.tree.map(jnp.zeros_like, params["Dense_0"])}
        return params, task.loss(zero, b), task.loss(params, b)

    params, at_zero, at_init = run(jax.random.key(0))
    # 8x8x1 -> 8x8x4 -> 4x4x6 -> flatten 96 -> 10.
    assert params["PatchConv_0"]["kernel"].shape == (3, 3, 1, 4)
    assert params["PatchConv_1"]["kernel"].shape == (3, 3, 4, 6)
    assert params["Dense_0"]["kernel"].shape == (96, 10)
    np.testing.assert_allclose(at_zero, np.log(10), rtol=1e-6)
    assert abs(float(at_init) - np.log(10)) > 1e-3


def test_autoencoder_loss_equals_hand_computed_mse():
    fam = tasks.make("autoencoder_family", hidden=(3,), bottleneck=2, activations=("tanh",),
                     batch_size=5)
    task = fam.task(fam.sample(jax.random.key(0)))
    shapes = jax.eval_shape(task.init, jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(size=s.shape).astype(np.float32) * 0.5, shapes)
    b = task.batch(jax.random.key(1), "valid")
    x = np.asarray(b["x"], np.float64)
    assert x.shape == (5, 64) and x.min() >= 0 and x.max() <= 1 and x.max() > 0.5
    h = x
    for i in range(3):  # 64 -> 3 -> 2 -> 3, tanh
        layer = params[f"Dense_{i}"]
        h = np.tanh(h @ np.asarray(layer["kernel"], np.float64) + np.asarray(layer["bias"]))
    out = params["Dense_3"]
    xhat = 1 / (1 + np.exp(-(h @ np.asarray(out["kernel"], np.float64) + np.asarray(out["bias"]))))
    want = np.mean((xhat - x) ** 2)
    np.testing.assert_allclose(jax.jit(task.loss)(params, b), want, rtol=1e-5)


def test_logistic_loss_is_log_c_at_zero_and_scales_features():
    fam = tasks.make("logistic_family", feature_scale_range=(0.01, 100.0), batch_size=16,
                     label_noise_range=(0.0, 0.0))
    cfg = fam.sample(jax.random.key(0))
    scales = np.exp(np.asarray(cfg.log_feature_scales, np.float64))
    assert scales.shape == (64,) and scales.min() >= 0.01 * 0.999 and scales.max() <= 100.001
    assert scales.max() / scales.min() > 100  # spread out: the conditioning varies
    task = fam.task(cfg)
    params = task.init(jax.random.key(1))
    assert all(np.all(np.asarray(p) == 0) for p in jax.tree.leaves(params))
    b = task.batch(jax.random.key(2), "train")
    np.testing.assert_allclose(task.loss(params, b), np.log(10), rtol=1e-6)
    # At random weights: softmax regression on x * s, by hand.
    rng = np.random.default_rng(0)
    w, c = rng.normal(size=(64, 10)) * 0.01, rng.normal(size=10)
    logits = (np.asarray(b["x"]).reshape(16, 64) * scales) @ w + c
    logp = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1))[:, None] \
        - logits.max(1, keepdims=True)
    want = -np.mean(logp[np.arange(16), np.asarray(b["y"])])
    p = {"Dense_0": {"kernel": jnp.asarray(w, jnp.float32), "bias": jnp.asarray(c, jnp.float32)}}
    np.testing.assert_allclose(task.loss(p, b), want, rtol=2e-4)


@pytest.mark.slow  # ~15-20 s of compiling on 2 cores (default suite < 10 min)
def test_markov_sequences_follow_the_transition_matrix():
    fam = tasks.make("sequence_family", vocab_size=4, length=20, batch_size=500,
                     sharpness_range=(1.0, 1.0))
    cfg = fam.sample(jax.random.key(0))
    task = fam.task(cfg)
    draw = jax.jit(task.batch, static_argnums=1)
    tokens = np.asarray(draw(jax.random.key(1), "train")["tokens"])
    assert tokens.shape == (500, 21) and tokens.min() >= 0 and tokens.max() <= 3
    counts = np.zeros((4, 4))
    np.add.at(counts, (tokens[:, :-1].ravel(), tokens[:, 1:].ravel()), 1)
    n = counts.sum(1, keepdims=True)
    freq, t = counts / n, np.asarray(cfg.transition, np.float64)
    np.testing.assert_allclose(t.sum(1), 1.0, rtol=1e-5)
    # CLT: each row's frequencies are within 5 standard errors of the matrix's row.
    assert np.all(np.abs(freq - t) <= 5 * np.sqrt(t * (1 - t) / n) + 1e-3)
    # Another split is another sample, and the loss at zero params is log V.
    valid = np.asarray(draw(jax.random.key(1), "valid")["tokens"])
    assert not np.array_equal(valid, tokens)
    zero = jax.tree.map(jnp.zeros_like, task.init(jax.random.key(2)))
    metrics = jax.jit(task.metrics)(zero, {"tokens": jnp.asarray(tokens)})
    np.testing.assert_allclose(metrics["loss"], np.log(4), rtol=1e-6)
    bayes = -np.mean(np.log(t[tokens[:, :-1], tokens[:, 1:]]))
    np.testing.assert_allclose(metrics["bayes_loss"], bayes, rtol=1e-5)


@pytest.mark.slow
def test_quadratic_condition_range_draws_a_condition_number_per_task():
    fam = tasks.make("quadratic", dim=12, max_eig=2.0, random_spectrum=True,
                     condition_range=(1.0, 1e3))
    cfgs = jax.jit(jax.vmap(fam.sample))(jax.random.split(jax.random.key(0), 64))
    eig = np.asarray(cfgs.eigvals, np.float64)
    kappa = eig.max(1) / eig.min(1)
    np.testing.assert_allclose(eig.max(1), 2.0, rtol=1e-5)
    assert kappa.min() >= 1 - 1e-5 and kappa.max() <= 1e3 * (1 + 1e-4)
    # log10 kappa ~ U(0, 3): mean 1.5, sd 0.87; 64 draws.
    assert abs(np.log10(kappa).mean() - 1.5) < 4 * 0.87 / 8
    with pytest.raises(ValueError, match=r"condition_range\[0\]: must be a number >= 1"):
        tasks.make("quadratic", condition_range=(0.5, 10.0))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL) + ["sequence_family_gru"])
def test_default_family_trains_under_inner_problem(name):
    opts = {"cell": "gru"} if name == "sequence_family_gru" else {}
    fam = tasks.make(name.removesuffix("_gru"), augment_scale_range=(0.5, 2.0), **opts)
    problem = metaopt.inner_problem(fam, optax.adam(1e-2),
                                    schedule=metaopt.truncation.constant(100))
    states = problem.init_batch(jax.random.key(0), None, 4)
    keys = jax.random.split(jax.random.key(1), 4)
    _, out = jax.jit(problem.unroll_batch, static_argnums=3)(keys, None, states, 30)
    loss = np.asarray(out.loss)
    assert loss.shape == (4, 30) and np.all(np.isfinite(loss))
    assert np.mean(loss[:, -5:]) < np.mean(loss[:, :5])
