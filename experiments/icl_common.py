"""Shared by experiments/icl_vs_finetune and experiments/momentum_attention: the model sizes,
the in-context task, (seed-vmapped) meta-training of the linear-attention transformer and
its in-context evaluation."""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import optax

from experiments import hypergrad_common as common
from metaopt.linear_transformer import LinearTransformer
from metaopt.tasks.in_context import Episodes, icl_tokens, sample_episodes

X_DIM, DEMOS, QUERIES = 8, 16, 8  # task: d = 8, K = 16 demonstrations, M = 8 queries
SIZES = {  # name -> (layers, width, heads)
    "S (2 layers, width 32)": (2, 32, 2),
    "M (3 layers, width 64)": (3, 64, 4),
    "L (4 layers, width 64)": (4, 64, 4),
}
TRAIN_LR, TRAIN_BATCH = 2e-3, 64


def make_model(size: tuple[int, int, int], momentum: float = 0.0) -> LinearTransformer:
    layers, dim, heads = size
    return LinearTransformer(layers=layers, dim=dim, heads=heads, scale=1.0 / (DEMOS + QUERIES),
                             momentum=momentum)


def episodes(key, batch: int, demos: int = DEMOS) -> Episodes:
    return sample_episodes(key, batch, X_DIM, demos, QUERIES)


def query_predictions(model, params, ep: Episodes) -> jax.Array:
    """In-context predictions at the query positions, ``(B, M)``."""
    pred, _ = model.apply(params, icl_tokens(ep))
    return pred[:, ep.demo_x.shape[1]:]


def train(model: LinearTransformer, key: jax.Array, steps: int, batch: int = TRAIN_BATCH,
          lr: float = TRAIN_LR):
    """Adam (warmup + cosine decay, grad-norm clip 1) on the query MSE of fresh episodes each
    step (sampled in-jit). Returns ``(params, loss curve (steps,))``; vmap over ``key`` for
    several seeds in one program."""
    k_init, k_run = jax.random.split(key)
    params = model.init(k_init, icl_tokens(episodes(k_init, 1)))
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, steps // 10), steps, lr / 20)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(sched))

    def loss_fn(p, ep):
        return jnp.mean((query_predictions(model, p, ep) - ep.query_y) ** 2)

    def step(carry, k):
        p, s = carry
        loss, g = jax.value_and_grad(loss_fn)(p, episodes(k, batch))
        upd, s = opt.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (params, _), curve = jax.lax.scan(step, (params, opt.init(params)),
                                      jax.random.split(k_run, steps))
    return params, curve


def evaluate(model, params, key, n_episodes: int, demos: int = DEMOS) -> dict:
    """In-context query MSE and accuracy (sign agreement) on ``n_episodes`` fresh episodes."""
    ep = episodes(key, n_episodes, demos)
    pred = query_predictions(model, params, ep)
    return {"mse": jnp.mean((pred - ep.query_y) ** 2),
            "accuracy": jnp.mean(jnp.sign(pred) == ep.query_y)}


def seed_keys(seeds: int) -> jax.Array:
    return jnp.stack([jax.random.key(s) for s in range(seeds)])


def parse_args(doc: str, out: str, argv=None) -> argparse.Namespace:
    """The experiments' common CLI (``--smoke --seeds --out``) plus ``--steps`` (400)."""
    parser = common.base_parser(doc, out)
    parser.add_argument("--steps", type=int, default=400, help="meta-training steps per model")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.steps < 1:
        parser.error("--seeds and --steps must be >= 1")
    return args
