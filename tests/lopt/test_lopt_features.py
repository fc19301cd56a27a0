"""Unit tests of the pieces: flat layout, per-tensor features, the per-parameter network."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from lopt_testutil import cast

from metaopt import lopt
from metaopt.lopt import features as ft
from metaopt.lopt import flat, ppnet
from metaopt.lopt.lstm import preprocess


def _tree():
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    return {"a": jax.random.normal(k[0], (3, 4)), "b": jax.random.normal(k[1], (5,)),
            "c": jnp.asarray(2.0), "d": jax.random.normal(k[2], (2, 1, 3)).astype(jnp.bfloat16)}


def test_flat_round_trip_and_segments():
    tree = _tree()
    lay = flat.layout(tree)
    assert lay.sizes == (12, 5, 1, 6) and lay.total == 24 and lay.num_tensors == 4
    vec = flat.flatten(tree, lay)
    assert vec.shape == (24,) and vec.dtype == jnp.float32
    back = flat.unflatten(vec, lay)
    for x, y in zip(jax.tree.leaves(back), jax.tree.leaves(tree), strict=True):
        assert x.dtype == y.dtype and np.array_equal(np.asarray(x), np.asarray(y))
    seg = np.asarray(flat.segment_ids(lay))
    np.testing.assert_array_equal(seg, np.repeat(np.arange(4), lay.sizes))
    with pytest.raises(ValueError, match="params"):
        flat.layout({})


def test_segment_ids_many_tensors():
    tree = [jnp.zeros((i % 3 + 1,)) for i in range(40)]  # binary-search branch (> 16 tensors)
    lay = flat.layout(tree)
    np.testing.assert_array_equal(np.asarray(flat.segment_ids(lay)),
                                  np.repeat(np.arange(40), lay.sizes))


def test_per_tensor_means_value_and_derivatives():
    lay = flat.layout(_tree())
    x = flat.flatten(_tree(), lay)
    w = jnp.arange(8.0).reshape(4, 2)

    def mine(x):
        return jnp.sum(w * flat.per_tensor_means([x * x, jnp.sin(x)], lay))

    def ref(x):
        parts = [jnp.stack([jnp.mean(x[o:o + n] ** 2), jnp.mean(jnp.sin(x[o:o + n]))])
                 for o, n in zip(lay.offsets, lay.sizes)]
        return jnp.sum(w * jnp.stack(parts))

    all_of = jax.jit(lambda x: [(f(x), jax.grad(f)(x), jax.jvp(f, (x,), (x,))[1])
                                for f in (mine, ref)])
    got, want = all_of(x)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_features_are_normalized_per_tensor():
    rng = np.random.default_rng(0)
    g = jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)
    p = 2 * g + 1

    @jax.jit
    def compute(g, p):
        mom, rms = ft.update_moments(g, jnp.zeros((2, 6, 5)), jnp.ones((1, 6, 5)), (0.9, 0.99),
                                     (0.999,))
        ms, vs = flat.unstack(mom), flat.unstack(rms)
        feats = ft.per_param_features(g, p, ms, vs)
        direct = ft.means([f * f for f in feats])
        fast = ft.means(ft.second_moment_terms(g, p, ms, vs))
        scales = ft.normalizer_scales(fast)
        normed = ft.means([jnp.square(f * s) for f, s in zip(feats, flat.unstack(scales))])
        return mom, len(feats), direct, fast, normed

    mom, num, direct, fast, normed = compute(g, p)
    np.testing.assert_allclose(mom[1], 0.01 * g, rtol=1e-6)
    assert num == ft.num_features(2, 1)
    np.testing.assert_allclose(fast, direct, rtol=1e-5)  # identity-based == the features' own
    np.testing.assert_allclose(normed, 1.0, rtol=1e-4)


def test_stats_sample_estimates_the_tensor_means():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(300, 1024)) ** 2, jnp.float32)
    small = jnp.ones((100, 100))
    assert ft.stats_sample(small, 9) is small  # below SAMPLE_MIN_SIZE: exact
    sample = ft.stats_sample(x, 9)
    assert sample.shape == (267, 128)  # every 9th chunk of 128 entries
    np.testing.assert_allclose(jnp.mean(sample), jnp.mean(x), rtol=2e-2)
    np.testing.assert_array_equal(ft.stats_sample(x, 1), x)


def test_step_embedding():
    e0 = ft.step_embedding(jnp.float32(0), jnp.float32(100), 3)
    e1 = ft.step_embedding(jnp.float32(100), jnp.float32(100), 3)
    assert e0.shape == (6,)
    np.testing.assert_allclose(e0, [0, 0, 0, 1, 1, 1], atol=1e-6)
    np.testing.assert_allclose(e1, [0, 0, 0, -1, 1, 1], atol=1e-5)
    np.testing.assert_allclose(ft.step_embedding(jnp.float32(500), jnp.float32(100), 3), e1,
                               atol=1e-5)  # clipped past the budget


def test_narrow_matmul_is_the_matmul_with_its_derivatives():
    """``narrow_matmul`` (broadcast product summed over K) equals ``x @ w`` in float64, and so
    do its first derivatives (a VJP and a JVP) and a second one (the gradient of a VJP's
    norm: reverse-over-reverse through the custom rule)."""
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        x = jnp.asarray(rng.normal(size=(2, 7, 32)))
        w = jnp.asarray(rng.normal(size=(32, 2)))
        g = jnp.asarray(rng.normal(size=(2, 7, 2)))
        dx, dw = jnp.asarray(rng.normal(size=x.shape)), jnp.asarray(rng.normal(size=w.shape))

        def second(f):
            return jax.grad(lambda x_, w_: jnp.sum(jnp.square(
                jax.vjp(f, x_, w_)[1](g)[1])), argnums=(0, 1))(x, w)

        dot = lambda a, b: a @ b
        got = (ppnet.narrow_matmul(x, w), jax.vjp(ppnet.narrow_matmul, x, w)[1](g),
               jax.jvp(ppnet.narrow_matmul, (x, w), (dx, dw))[1], second(ppnet.narrow_matmul))
        want = (x @ w, jax.vjp(dot, x, w)[1](g), jax.jvp(dot, (x, w), (dx, dw))[1],
                second(dot))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert a.dtype == jnp.float64
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("hidden", [(4,), pytest.param((3, 2), marks=pytest.mark.slow)])
def test_fused_and_matmul_networks_agree(hidden):
    """The fused elementwise network equals its matmul form, its derivative (taken through
    the matmul form) matches central differences, and the flat-layout form agrees too; in
    float64 (network, features, scales), so that agreement is checked to ~1e-12 and the
    derivative to 1e-7 (h = 1e-5: truncation ~1e-10, rounding ~1e-11)."""
    nf, nc = 5, 3
    net32 = ppnet.init_net(jax.random.PRNGKey(1), nf, nc, hidden, 3, skip_index=2)
    rng = np.random.default_rng(2)
    h = 1e-5
    with jax.enable_x64(True):
        net = cast(net32, jnp.float64)
        feats = [jnp.asarray(rng.normal(size=(4, 3))) for _ in range(nf)]
        scales = jnp.asarray(rng.uniform(0.5, 1.5, size=(1, nf)))
        const = jnp.asarray(rng.normal(size=(1, nc)))
        d = jax.tree.map(lambda x: jnp.ones_like(x) / np.sqrt(x.size), net)

        def forward(fn, net):
            w_in, b_in = ppnet.fold_inputs(net, scales, const)
            return fn(net, feats, scales[0], w_in[0], b_in[0])

        def loss(fn, net):
            return sum(jnp.sum(jnp.sin(o)) for o in forward(fn, net))

        @jax.jit
        def compute(net):
            gf = jax.grad(lambda n: loss(ppnet._apply_fused, n))(net)
            gd = jax.grad(lambda n: loss(ppnet._apply_dot, n))(net)
            fd = (loss(ppnet._apply_fused, jax.tree.map(lambda x, y: x + h * y, net, d))
                  - loss(ppnet._apply_fused, jax.tree.map(lambda x, y: x - h * y, net, d)))
            ad = sum(jnp.sum(a * b) for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(d)))
            lay = flat.layout(feats[0])
            flat_out = ppnet.apply_net_flat(net, [f.reshape(-1) for f in feats], scales, const,
                                            lay)
            return (forward(ppnet._apply_fused, net), forward(ppnet._apply_dot, net), flat_out,
                    gf, gd, fd / (2 * h), ad)

        fused, dot, flat_out, gf, gd, fd, ad = compute(net)
    assert all(x.dtype == jnp.float64 for x in (*fused, *dot, *flat_out, *jax.tree.leaves(gf)))
    for a, b, c in zip(fused, dot, flat_out, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(a.reshape(-1), c, rtol=1e-12, atol=1e-13)
    for a, b in zip(jax.tree.leaves(gf), jax.tree.leaves(gd), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)
    assert abs(float(fd)) > 1e-2
    np.testing.assert_allclose(float(ad), float(fd), rtol=1e-7)  # vs finite differences


def test_lstm_preprocessing():
    g = jnp.asarray([1.0, -0.5, 1e-6, 0.0, -1e-6])
    x = np.asarray(preprocess(g, 10.0))
    np.testing.assert_allclose(x[:2], [[0.0, 1.0], [np.log(0.5) / 10, -1.0]], rtol=1e-6)
    np.testing.assert_allclose(x[2:], [[-1.0, np.exp(10) * 1e-6], [-1.0, 0.0],
                                       [-1.0, -np.exp(10) * 1e-6]], rtol=1e-5)
    grad = jax.grad(lambda g: jnp.sum(preprocess(g) ** 2))(g)
    assert np.all(np.isfinite(np.asarray(grad)))


def test_iteration_and_budget_reach_the_step_embedding():
    lo = lopt.make("mlp_small")
    opt = lo.optimizer(lo.init(jax.random.PRNGKey(0)), num_steps=100)
    params = {"w": jnp.ones((4, 3))}
    g = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(4, 3)}
    s = opt.init(params)
    default, _ = jax.jit(opt.update)(g, s, params)  # internal count 0, static budget 100
    step = jax.jit(lambda k: opt.update(g, s, params, iteration=k, num_steps=jnp.int32(100))[0])
    explicit, late = step(jnp.int32(0)), step(jnp.int32(90))
    np.testing.assert_allclose(default["w"], explicit["w"], rtol=1e-6)
    assert not np.allclose(default["w"], late["w"])


@pytest.mark.parametrize("make, field", [
    (lambda: lopt.mlp_lopt(skip="nope"), "skip"),
    (lambda: lopt.mlp_lopt(hidden=(0,)), "hidden"),
    (lambda: lopt.mlp_lopt(rms_decays=(0.9, 0.99), mom_decays=(0.9, 0.99, 0.999)), "rms_decays"),
    (lambda: lopt.lstm_lopt(p=-1.0), "p"),
    (lambda: lopt.hierarchical_lopt(decays=(0.5, 1.5)), "decays"),
    (lambda: lopt.hierarchical_lopt(lstm_hidden=0), "lstm_hidden"),
])
def test_bad_configuration_names_the_field(make, field):
    with pytest.raises(ValueError, match=field):
        make()
