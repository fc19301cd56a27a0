"""Faults during outer training: an unstable configuration makes inner tasks diverge (they are
reset and counted, their contributions masked) and, through a gradient poisoned on the worst
truncations, non-finite outer gradients (the update is skipped and counted); training goes on
to the last step with a finite theta that keeps moving."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.io.metrics import read_metrics
from metaopt.train import artifacts, build, presets
from metaopt.train.loop import train

STEPS = 10
# learnable SGD (lr 0.1) on 10-d quadratics, PES with sigma = 3 on log lr: perturbed
# particles use learning rates up to ~e^3 times larger and diverge within a truncation
UNSTABLE = dataclasses.replace(
    presets.PRESETS["smoke"], task="quadratic", lopt="sgd", estimator="pes", sigma=3.0,
    episode_length=80, truncation=40, num_tasks=8, outer_steps=STEPS, log_every=1,
    checkpoint_every=STEPS, outer_optimizer="sgd", outer_lr=0.3, seed=1)


def _poison_when_many_tasks_restart(real):
    """The real estimator, except that a truncation in which >= 2 tasks restarted returns a
    NaN gradient (as an estimator without per-task masking would)."""

    def make(cfg, problem, num_tasks, axis_name=None):
        est = real(cfg, problem, num_tasks, axis_name)

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
    lopt, theta = artifacts.load_learned_optimizer(tmp_path)
    theta0 = lopt.init(jax.random.fold_in(jax.random.key(UNSTABLE.seed), 0))
    assert abs(float(theta["log_lr"]) - float(theta0["log_lr"])) > 1e-3
    assert np.isfinite(float(theta["log_lr"]))
