"""Meta-training a learnable SGD learning rate with each estimator moves it to the optimum.

Task: the fixed diagonal quadratic of ``quadratic_reference`` (eigenvalues 0.1..1), 20-step
episodes, meta-loss the mean validation loss, known in closed form, and so is the optimal
learning rate (about 1.36; the same for the random family ``diag_family``). A fixed task keeps
the five compiles cheap; random tasks are exercised by the finite-difference tests.
Each run starts at lr 0.05 (log distance ~3.3 from the optimum) and must end within 0.3.
The jitted outer step must also compile once and keep its state's shapes and dtypes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import quadratic_reference as Q

from metaopt import estimators as E
from metaopt.outer import OuterState, outer_trainer

HORIZON = 20
CONFIGS = {
    "full_backprop": dict(num_tasks=8),
    "tbptt": dict(num_tasks=8, unroll_length=5),
    "es": dict(num_tasks=8, sigma=0.1),
    "truncated_es": dict(num_tasks=8, sigma=0.1, unroll_length=5),
    "pes": dict(num_tasks=8, sigma=0.1, unroll_length=5),
}


def _specs(tree):
    return jax.tree.map(lambda x: (jnp.shape(x), jnp.result_type(x)), tree)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_meta_training_moves_the_learning_rate_to_the_optimum(name, count_compiles):
    best = Q.optimal_log_lr(HORIZON)
    start = float(np.log(0.05))
    est = E.make(name, Q.problem(Q.fixed_task(), HORIZON), **CONFIGS[name])
    trainer = outer_trainer(est, optax.adam(0.05), clip_norm=10.0)
    state = jax.jit(trainer.init)(jax.random.PRNGKey(0), {"log_lr": jnp.asarray(start)})
    step = jax.jit(trainer.step)
    spec = _specs(state)
    lrs, losses = [], []
    keys = list(jax.random.split(jax.random.PRNGKey(1), 160))  # sliced outside the count
    state, metrics = step(keys[0], state)  # compiles
    with count_compiles() as compiles:
        for key in keys[1:]:
            state, metrics = step(key, state)
            lrs.append(float(state.theta["log_lr"]))
            losses.append(float(metrics["meta_loss"]))
    assert compiles.count == 0  # no recompilation
    assert isinstance(state, OuterState) and _specs(state) == spec
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert int(state.step) == 160 and int(state.skipped) == 0
    final = np.mean(lrs[-20:])
    assert abs(final - best) < 0.3, (name, final, best)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:5])
