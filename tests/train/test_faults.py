"""Faults during outer training: an unstable configuration makes inner tasks diverge (they are
reset and counted, their contributions masked) and, through a gradient poisoned on the worst
truncations, non-finite outer gradients (the update is skipped and counted); training goes on
to the last step with a finite theta that keeps moving."""

import jax
import jax.numpy as jnp
import numpy as np

import metaopt
from metaopt.io.metrics import read_metrics
from metaopt.spec import Spec
from metaopt.train import build
from metaopt.train.config import RunConfig
from metaopt.train.loop import run_keys, train

STEPS = 10
# learnable SGD (lr 0.1) on 10-d quadratics, PES with sigma = 3 on log lr: perturbed
# particles use learning rates up to ~e^3 times larger and diverge within a truncation
UNSTABLE = RunConfig(
    task="quadratic", schedule=Spec("constant", {"length": 80}), lopt="sgd",
    estimator=Spec("pes", {"num_tasks": 8, "unroll_length": 40, "sigma": 3.0,
                           "meta_loss": "train"}),
    outer=Spec("sgd", {"learning_rate": 0.3}),
    run={"outer_steps": STEPS, "log_every": 1, "checkpoint_every": STEPS, "seed": 1})


def _poison_when_many_tasks_restart(real):
    """The real estimator, except that a truncation in which >= 2 tasks restarted returns a
    NaN gradient (as an estimator without per-task masking would)."""

    def make(spec, problem, num_tasks, axis_name=None, key="estimator"):
        est = real(spec, problem, num_tasks, axis_name, key)

        def estimate(key, theta, state):
            grad, state, metrics = est.estimate(key, theta, state)
            bad = metrics["restarted_tasks"] >= 2
            return jax.tree.map(lambda g: jnp.where(bad, jnp.nan, g), grad), state, metrics

        return est._replace(estimate=estimate)

    return make


def test_unstable_training_resets_tasks_skips_updates_and_continues(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "make_estimator",
                        _poison_when_many_tasks_restart(build.make_estimator))
    summary = train(UNSTABLE, tmp_path, progress=False)
    assert summary["step"] == STEPS and summary["reason"] == "finished"
    assert summary["theta_finite"]

    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    # inner divergences happened, were counted, and the diverged tasks were restarted
    assert sum(r["nonfinite_steps"] for r in rows) > 0
    assert sum(r["restarted_tasks"] for r in rows) > 0
    # exactly the poisoned steps were skipped, and some were not
    poisoned = [r["restarted_tasks"] >= 2 for r in rows]
    assert [r["skipped"] == 1.0 for r in rows] == poisoned
    assert rows[-1]["skipped_total"] == sum(poisoned)
    assert 0 < sum(poisoned) < STEPS
    # theta moved on the steps that were not skipped
    lopt, theta = metaopt.load_optimizer(tmp_path)
    theta0 = lopt.init(run_keys(UNSTABLE.run.seed).theta)
    assert abs(float(theta["log_lr"]) - float(theta0["log_lr"])) > 1e-3
    assert np.isfinite(float(theta["log_lr"]))
