"""The linear-attention transformer (metaopt.linear_transformer) against the dual-form
primitive and hand-computed momentum terms; Dai et al.'s metrics (metaopt.icl_metrics) on hand
examples; the in-context episodes (metaopt.tasks.in_context)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import icl_metrics as im
from metaopt.dual_form import linear_attention
from metaopt.linear_transformer import LinearAttention, LinearTransformer, causal_ema_matrix
from metaopt.tasks.in_context import icl_tokens, sample_episodes, tokens


@pytest.mark.slow  # ~3 s quiet (eager flax); the default suite's budget is nearly spent
def test_attention_layer_is_the_dual_form_primitive_plus_the_ema_of_values():
    with jax.enable_x64(True):
        n, dim, heads, lam, scale = 6, 8, 2, 0.7, 0.25
        u = jax.random.normal(jax.random.key(0), (1, n, dim), jnp.float64)
        plain = LinearAttention(dim, heads, scale)
        params = plain.init(jax.random.key(1), u)
        out_plain, scores = plain.apply(params, u)
        out_mo, _ = LinearAttention(dim, heads, scale, momentum=lam).apply(params, u)
        p = params["params"]
        q, k, v = (u[0] @ p[name]["kernel"] for name in ("query", "key", "value"))
        hd = dim // heads
        for j in range(n):
            heads_out = [scale * linear_attention(k[:j + 1, h * hd:(h + 1) * hd],
                                                  v[:j + 1, h * hd:(h + 1) * hd],
                                                  q[j, h * hd:(h + 1) * hd])
                         for h in range(heads)]
            expect = jnp.concatenate(heads_out) @ p["out"]["kernel"]
            np.testing.assert_allclose(out_plain[0, j], expect, rtol=1e-10, atol=1e-12)
            ema = sum(lam ** (j - i) * v[i] for i in range(j)) if j else jnp.zeros(dim)
            np.testing.assert_allclose(out_mo[0, j] - out_plain[0, j],
                                       ema @ p["out"]["kernel"], rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(scores[0, 0, j, :], k[:, :hd] @ q[j, :hd], rtol=1e-10)


@pytest.mark.slow
def test_transformer_is_causal_and_reports_per_layer_outputs_and_maps():
    model = LinearTransformer(layers=2, dim=16, heads=2, momentum=0.9)
    x = jax.random.normal(jax.random.key(0), (2, 7, 5))
    params = model.init(jax.random.key(1), x)
    pred, aux = model.apply(params, x)
    assert pred.shape == (2, 7)
    assert aux["attn_out"].shape == (2, 2, 7, 16) and aux["scores"].shape == (2, 2, 2, 7, 7)
    pred2, _ = model.apply(params, x.at[:, 4].add(3.0))
    np.testing.assert_allclose(pred2[:, :4], pred[:, :4], rtol=1e-6)
    assert float(jnp.max(jnp.abs(pred2[:, 4:] - pred[:, 4:]))) > 1e-3
    np.testing.assert_allclose(causal_ema_matrix(3, 0.5),
                               [[0, 0, 0], [0.5, 0, 0], [0.25, 0.5, 0]])
    with pytest.raises(ValueError, match="tokens"):
        model.apply(params, x[0])


def test_dai_metrics_on_hand_examples():
    icl = jnp.array([True, True, False, False, True])
    ft = jnp.array([True, True, True, False, True])
    zsl = jnp.array([False, True, False, False, False])
    rec, count = im.rec2ftp(icl, ft, zsl)  # FT-not-ZSL: queries 0, 2, 4; ICL right on 0, 4
    assert int(count) == 3 and float(rec) == pytest.approx(200 / 3)
    h_zsl = jnp.zeros((3, 4))
    h_icl = jnp.eye(3, 4)
    assert float(im.simaou(h_icl, 2 * h_icl, h_zsl)) == pytest.approx(1.0)
    assert float(im.simaou(h_icl, -h_icl, h_zsl)) == pytest.approx(-1.0)
    big = jax.random.normal(jax.random.key(0), (200, 512))
    assert abs(float(im.random_simaou(jax.random.key(1), big, jnp.zeros_like(big)))) < 0.01
    assert float(im.simam(jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 1.0]]))) == pytest.approx(
        2**-0.5)
    assert float(im.cosine(jnp.zeros(3), jnp.ones(3))) == 0.0
    with pytest.raises(ValueError, match="shapes differ"):
        im.cosine(jnp.ones(3), jnp.ones(4))


def test_episodes_and_tokens():
    ep = sample_episodes(jax.random.key(0), 4, 3, 5, 2)
    assert ep.demo_x.shape == (4, 5, 3) and ep.query_y.shape == (4, 2)
    assert set(np.unique(np.concatenate([ep.demo_y.ravel(), ep.query_y.ravel()]))) <= {-1, 1}
    seq = icl_tokens(ep)
    assert seq.shape == (4, 7, 4)
    np.testing.assert_array_equal(seq[:, :5, -1], ep.demo_y)
    np.testing.assert_array_equal(seq[:, 5:, -1], 0.0)
    np.testing.assert_array_equal(tokens(ep.query_x)[..., :3], ep.query_x)
    with pytest.raises(ValueError, match="dim"):
        sample_episodes(jax.random.key(0), 4, 0, 5, 2)
