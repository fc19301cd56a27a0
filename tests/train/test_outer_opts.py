"""Outer optimizers made of learned optimizers: self-training (theta updates itself, after an
Adam warm-up) against the closed form of learnable SGD, and a frozen pretrained optimizer."""

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import lopt as lopt_lib
from metaopt import pretrained
from metaopt.train import artifacts, presets
from metaopt.train.evaluate import curves, make_eval_task
from metaopt.train.loop import train
from metaopt.train.outer_opt import frozen_optimizer, self_optimizer


def test_self_training_sgd_follows_its_own_learning_rate_after_adam_warmup():
    """theta = {log_lr}: after one Adam step (-0.01 sign g), theta_{k+1} = theta_k - e^theta_k g."""
    sgd = lopt_lib.make("sgd")
    theta = sgd.init(jax.random.key(0))
    assert set(theta) == {"log_lr"}
    tx = self_optimizer(sgd, warmup_steps=1, warmup=optax.adam(0.01))
    state = tx.init(theta)
    upd = jax.jit(tx.update)
    expected = math.log(0.1)
    for g in (2.0, 0.5, -1.5):
        grad = {"log_lr": jnp.float32(g)}
        u, state = upd(grad, state, theta)
        theta = optax.apply_updates(theta, u)
        expected = expected - 0.01 * math.copysign(1.0, g) if int(state.count) == 1 else \
            expected - math.exp(expected) * g
        np.testing.assert_allclose(float(theta["log_lr"]), expected, rtol=1e-5)
    assert int(state.count) == 3


def test_frozen_pretrained_optimizer_is_the_saved_learned_optimizer():
    opt, theta = pretrained.load("mlp_small_digits")
    frozen = frozen_optimizer("mlp_small_digits")
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    a, _ = frozen.update(grads, frozen.init(params), params)
    ref = opt.optimizer(theta)
    b, _ = ref.update(grads, ref.init(params), params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_pretrained_mlp_small_beats_its_untrained_start_and_sgd_on_digits():
    """The shipped quickstart optimizer: on the digits MLP (2 seeds, 120 steps) its final
    training loss is under half that of its untrained init and of SGD(0.1) (measured when it
    was saved, 200 steps: about 1/10 of both)."""
    opt, theta = pretrained.load("mlp_small_digits")
    task = make_eval_task("digits_mlp")
    final = {}
    for label, tx in {"trained": opt.optimizer(theta),
                      "untrained": opt.optimizer(opt.init(jax.random.fold_in(jax.random.key(0),
                                                                             0))),
                      "sgd": optax.sgd(0.1)}.items():
        c = curves(task, tx, steps=120, seeds=2)["train"]
        final[label] = float(np.mean(c[:, -12:]))
    assert final["trained"] < 0.5 * final["untrained"], final
    assert final["trained"] < 0.5 * final["sgd"], final


def test_metaopt_train_self_and_frozen_outer_optimizers_run(tmp_path):
    # learnable SGD on quadratics keeps compilation short; theta = {log_lr}
    base = dataclasses.replace(presets.PRESETS["smoke"], task="quadratic", lopt="sgd",
                               outer_steps=3, checkpoint_every=3)
    for name, cfg in {
        "self": dataclasses.replace(base, outer_optimizer="self", self_warmup_steps=1),
        "frozen": dataclasses.replace(base, outer_optimizer="frozen",
                                      frozen_from="mlp_small_digits"),
    }.items():
        summary = train(cfg, tmp_path / name, progress=False)
        assert summary["step"] == 3 and summary["theta_finite"], name
        _, theta = artifacts.load_learned_optimizer(tmp_path / name)
        theta0 = lopt_lib.make(cfg.lopt).init(jax.random.fold_in(jax.random.key(cfg.seed), 0))
        moved = max(float(jnp.max(jnp.abs(a - b)))
                    for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(theta0)))
        assert moved > 0.0, name
