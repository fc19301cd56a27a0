"""ZSL, ICL and FT on one in-context episode, and Dai et al.'s metrics over many.

* ZSL: the query tokens ``[x_q, 0]`` alone, trained weights.
* ICL: demonstrations ``[x_i, y_i]`` then the queries, trained weights.
* FT: the query tokens alone, with the key and value projections of every attention layer
  (Dai et al. fine-tune exactly these, the matrices the dual form says ICL updates) trained
  by ``FT_STEPS`` full-batch gradient-descent steps on the demonstrations presented in the
  zero-shot format (tokens ``[x_i, 0]``, targets ``y_i``, squared loss).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt import icl_metrics as im
from metaopt.tasks.in_context import Episodes, icl_tokens, tokens

FT_STEPS = 5
FT_LRS = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _is_key_or_value(path) -> bool:
    names = [getattr(p, "key", None) for p in path]
    return any(n in ("key", "value") for n in names) and any(
        isinstance(n, str) and n.startswith("layer_") for n in names)


def finetune(model, params, demo_x, demo_y, lr, steps: int = FT_STEPS):
    """GD on W_K, W_V of all layers (one episode: ``demo_x (K, d)``, ``demo_y (K,)``)."""
    seq = tokens(demo_x)[None]
    mask = jax.tree_util.tree_map_with_path(lambda p, _: _is_key_or_value(p), params)

    def loss(p):
        return jnp.mean((model.apply(p, seq)[0][0] - demo_y) ** 2)

    def step(p, _):
        g = jax.grad(loss)(p)
        return jax.tree.map(lambda w, gw, m: w - lr * gw if m else w, p, g, mask), None

    return jax.lax.scan(step, params, None, length=steps)[0]


def episode(model, params, ep: Episodes, lr) -> dict:
    """Everything the metrics need for one episode (arrays without the batch axis)."""
    k, m = ep.demo_x.shape[0], ep.query_x.shape[0]
    q_tok = tokens(ep.query_x)[None]
    pred_z, aux_z = model.apply(params, q_tok)
    pred_i, aux_i = model.apply(params, icl_tokens(jax.tree.map(lambda a: a[None], ep)))
    pred_f, aux_f = model.apply(finetune(model, params, ep.demo_x, ep.demo_y, lr), q_tok)
    last = m - 1
    return {
        "correct": {name: jnp.sign(p[0]) == ep.query_y for name, p in
                    (("zsl", pred_z), ("icl", pred_i[:, k:]), ("ft", pred_f))},
        # attention outputs of the last query token, per layer: (L, dim)
        "h": {"zsl": aux_z["attn_out"][:, 0, last], "icl": aux_i["attn_out"][:, 0, k + last],
              "ft": aux_f["attn_out"][:, 0, last]},
        # scores of the last query token over the query's own tokens: (L, heads, M)
        "map": {"zsl": aux_z["scores"][:, 0, :, last, :m],
                "icl": aux_i["scores"][:, 0, :, k + last, k:k + m],
                "ft": aux_f["scores"][:, 0, :, last, :m]},
    }


def ft_accuracy(model, params, ep: Episodes, lr) -> jax.Array:
    """FT query accuracy over a batch of episodes (for choosing the FT learning rate)."""
    one = lambda e: jnp.mean(episode(model, params, e, lr)["correct"]["ft"])
    return jnp.mean(jax.vmap(one)(ep))


def metrics(model, params, ep: Episodes, lr, key) -> dict:
    """Dai et al.'s table row (and the three accuracies) over a batch of episodes."""
    out = jax.vmap(lambda e: episode(model, params, e, lr))(ep)
    c, h, mp = out["correct"], out["h"], out["map"]
    rec, count = im.rec2ftp(c["icl"], c["ft"], c["zsl"])
    return {
        "rec2ftp": rec, "rec2ftp_count": count,
        "simaou": im.simaou(h["icl"], h["ft"], h["zsl"]),
        "random_simaou": im.random_simaou(key, h["icl"], h["zsl"]),
        "simam": im.simam(mp["icl"], mp["ft"]),
        "zsl_simam": im.simam(mp["icl"], mp["zsl"]),
        # per layer (mean over episodes and heads): where the ZSL baseline is trivial
        "simam_per_layer": jnp.mean(im.cosine(mp["icl"], mp["ft"]), axis=(0, 2)),
        "zsl_simam_per_layer": jnp.mean(im.cosine(mp["icl"], mp["zsl"]), axis=(0, 2)),
        "simaou_per_layer": jnp.mean(im.cosine(h["icl"] - h["zsl"], h["ft"] - h["zsl"]),
                                     axis=0),
        **{f"acc_{name}": 100.0 * jnp.mean(v) for name, v in c.items()},
    }
