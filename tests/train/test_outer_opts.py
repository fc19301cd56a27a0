"""Outer optimizers made of learned optimizers (core registry ``metaopt.outer_optimizers``):
self-training against the closed form of learnable SGD, a frozen pretrained optimizer, and
``hierarchical`` -- which needs the ``loss`` extra arg -- as a self-trained and as a frozen
outer optimizer through ``metaopt train``."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import lopt as lopt_lib
from metaopt import outer_optimizers
from metaopt.spec import Spec
from metaopt.train.config import RunConfig
from metaopt.train.evaluate import curves
from metaopt.train.loop import train


def test_self_training_sgd_follows_its_own_learning_rate_after_adam_warmup():
    """theta = {log_lr}: after one Adam step (-0.01 sign g), theta_{k+1} = theta_k - e^theta_k g."""
    sgd = lopt_lib.make("sgd")
    theta = sgd.init(jax.random.key(0))
    assert set(theta) == {"log_lr"}
    tx = outer_optimizers.make("self", sgd, warmup_steps=1, warmup_learning_rate=0.01)
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
    opt, theta = metaopt.load_optimizer("mlp_small_digits")
    frozen = outer_optimizers.make("frozen", None, source="mlp_small_digits")
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    a, _ = frozen.update(grads, frozen.init(params), params)
    ref = opt.optimizer(theta)
    b, _ = ref.update(grads, ref.init(params), params)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_pretrained_mlp_small_beats_its_untrained_start_and_sgd_on_digits():
    """The shipped quickstart optimizer: on the digits MLP (2 seeds, 120 steps) its final
    training loss is under half that of its untrained init and of SGD(0.1) (measured when it
    was saved, 200 steps: about 1/10 of both). Trained and untrained thetas run in one vmapped
    unroll (same tasks and batches)."""
    from metaopt.inner import inner_problem, truncation

    opt, theta = metaopt.load_optimizer("mlp_small_digits")
    task = metaopt.tasks.make("digits_mlp")
    untrained = opt.init(jax.random.fold_in(jax.random.key(0), 0))  # its start (streams 1)
    ip = inner_problem(task, opt.optimizer, schedule=truncation.constant(121), valid=False)
    key = jax.random.key(1234)
    keys = jax.random.split(jax.random.fold_in(key, 1), 2)

    def run(th):
        return ip.unroll_batch(keys, th, ip.init_batch(key, th, 2), 120)[1].loss

    both = jax.jit(jax.vmap(run))(jax.tree.map(lambda a, b: jnp.stack([a, b]), theta, untrained))
    final = {"trained": float(jnp.mean(both[0, :, -12:])),
             "untrained": float(jnp.mean(both[1, :, -12:])),
             "sgd": float(np.mean(curves(task, optax.sgd(0.1), steps=120, seeds=2)["train"]
                                  [:, -12:]))}
    assert final["trained"] < 0.5 * final["untrained"], final
    assert final["trained"] < 0.5 * final["sgd"], final


def _synthetic_estimator(theta0):
    """A stand-in estimator (no inner unroll to compile): gradient ``0.1 sign(theta0)`` and a
    meta-loss that changes from call to call."""
    from metaopt.estimators import Estimator, NoState

    def estimate(key, theta, state):
        grad = jax.tree.map(lambda x: 0.1 * jnp.sign(x) + 0.01, theta0)
        return grad, state, {"meta_loss": jax.random.uniform(key) + 1.0,
                             "inner_steps": jnp.float32(0.0)}

    return Estimator(lambda key, theta: NoState(), estimate)


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_hierarchical_trains_itself_with_the_meta_loss_as_its_loss():
    """Defect 2 (self): ``hierarchical`` needs ``loss=`` in ``update``; as its own outer
    optimizer it passed validation and then raised MissingExtraArgError (exit 1). The outer
    step now passes the meta-loss."""
    h = lopt_lib.make("hierarchical")
    theta = h.init(jax.random.key(0))
    trainer = metaopt.outer_trainer(_synthetic_estimator(theta), outer_optimizers.make("self", h))
    state = trainer.init(jax.random.key(1), theta)
    step = jax.jit(trainer.step)
    for k in range(3):
        state, metrics = step(jax.random.key(10 + k), state)
        assert float(metrics["skipped"]) == 0.0
    moved = [float(jnp.max(jnp.abs(a - b)))
             for a, b in zip(jax.tree.leaves(state.theta), jax.tree.leaves(theta))]
    assert max(moved) > 0.0 and all(np.isfinite(moved))


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_frozen_hierarchical_outer_optimizer_through_metaopt_train(tmp_path):
    """Defect 2 (frozen): ``metaopt train ... outer.name=frozen outer.source=<a saved
    hierarchical>`` crashed the same way; now it trains."""
    h = lopt_lib.make("hierarchical")
    metaopt.save_optimizer(tmp_path / "h", Spec("hierarchical"), h.init(jax.random.key(0)),
                           num_steps=100, feed_valid_loss=False)
    cfg = RunConfig(task="quadratic", schedule=Spec("constant", {"length": 8}), lopt="sgd",
                    estimator=Spec("pes", {"num_tasks": 2, "unroll_length": 4, "sigma": 0.1,
                                           "meta_loss": "train"}),
                    outer=Spec("frozen", {"source": str(tmp_path / "h")}),
                    run={"outer_steps": 3, "checkpoint_every": 3, "log_every": 1})
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["step"] == 3 and summary["theta_finite"]
    assert summary["last_metrics"]["skipped_total"] == 0.0
    from metaopt.train.loop import run_keys

    _, theta = metaopt.load_optimizer(tmp_path / "run")
    theta0 = lopt_lib.make("sgd").init(run_keys(0).theta)
    assert abs(float(theta["log_lr"]) - float(theta0["log_lr"])) > 0.0
