"""Smoke test of experiments/blackbox_rnn (Chen et al. 2017) on a tiny budget: the LSTM query
policy meta-trained on GP-prior samples finds lower values on held-out GP samples than its
untrained start (which barely moves from the box's centre)."""

import jax
import jax.numpy as jnp

from experiments.blackbox_rnn import run
from experiments.hypergrad_common import FAST_COMPILE
from metaopt import blackbox as bb
from metaopt.tasks.gp_functions import gp_functions, gp_value


def test_meta_trained_rnn_beats_its_untrained_start_on_held_out_gp_functions():
    horizon, hidden = 8, (16,)
    theta0, theta, curve = run.meta_train(2, "oi", horizon, steps=60, batch=32,
                                          opts=FAST_COMPILE, hidden=hidden, lr=1e-2)
    assert curve.shape == (60,) and curve[-10:].mean() < curve[:10].mean()
    family, policy = gp_functions(2, lengthscale=run.LENGTHSCALE), bb.rnn_policy(2, hidden)

    def best(th, key):  # a held-out function (keys unused in training) and its first query
        k_cfg, k_x = jax.random.split(key)
        cfg = family.sample(k_cfg)
        _, ys = bb.rollout(policy, th, lambda x: gp_value(cfg, x),
                           jax.random.uniform(k_x, (2,)), horizon)
        return jnp.min(ys)

    keys = jax.random.split(jax.random.key(424242), 256)
    evaluate = jax.jit(jax.vmap(best, in_axes=(None, 0)), compiler_options=FAST_COMPILE)
    untrained, trained = evaluate(theta0, keys), evaluate(theta, keys)
    gain = untrained - trained  # paired over the same functions and first queries
    # measured: untrained -0.39, trained -0.66 (random search -0.97) mean best after 8 queries
    assert float(gain.mean()) > 4 * float(gain.std()) / 16 and float(gain.mean()) > 0.1
