"""A mixture of task families: the weighted mean of its members' estimates and metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import quadratic_reference as Q

from metaopt import estimators as E

THETA = {"log_lr": jnp.asarray(np.log(0.3), jnp.float32)}


def test_mixture_is_the_weighted_mean_of_its_members():
    """Two families with different parameter shapes (5-d and 3-d quadratics), TBPTT and full
    backprop, weights 3 : 1; each member sees fold_in(key, i) exactly as when run alone."""
    small = Q.problem(Q.diag_family(np.geomspace(0.2, 1.0, 3)), 8)
    big = Q.problem(Q.diag_family(), 8)
    members = [("big", 3.0, E.truncated_backprop(big, num_tasks=4, unroll_length=3)),
               ("small", 1.0, E.full_backprop(small, num_tasks=2))]
    mix = E.mixture(members)
    key = jax.random.PRNGKey(0)

    def run(k):
        s = mix.init(k, THETA)
        got = mix.estimate(jax.random.fold_in(k, 9), THETA, s)
        alone = [est.estimate(jax.random.fold_in(jax.random.fold_in(k, 9), i), THETA,
                              est.init(jax.random.fold_in(k, i), THETA))
                 for i, (_, _, est) in enumerate(members)]
        return got, alone

    (g, state, m), alone = jax.jit(run)(key)
    (g_big, s_big, m_big), (g_small, _, m_small) = alone
    np.testing.assert_allclose(g["log_lr"], 0.75 * g_big["log_lr"] + 0.25 * g_small["log_lr"],
                               rtol=1e-6)
    assert abs(float(g_big["log_lr"]) - float(g_small["log_lr"])) > 1e-3  # not vacuous
    np.testing.assert_allclose(m["meta_loss"], 0.75 * m_big["meta_loss"]
                               + 0.25 * m_small["meta_loss"], rtol=1e-6)
    assert float(m["inner_steps"]) == float(m_big["inner_steps"] + m_small["inner_steps"])
    np.testing.assert_allclose(m["big.meta_loss"], m_big["meta_loss"])
    np.testing.assert_allclose(m["small.meta_loss"], m_small["meta_loss"])
    jax.tree.map(np.testing.assert_array_equal, state[0], s_big)  # member state, task axis first


def test_bad_members_name_the_field():
    est = E.full_backprop(Q.problem(Q.fixed_task(), 4), num_tasks=1)
    cases = [([], "members"), ([("a", 1.0, est), ("a", 1.0, est)], r"members\[1\].name"),
             ([("a", 0.0, est)], r"members\[0\].weight"), ([("a.b", 1.0, est)], "name"),
             ([("a", float("inf"), est)], "weight")]
    for members, field in cases:
        with pytest.raises(ValueError, match=field):
            E.mixture(members)
    with pytest.raises(TypeError, match=r"members\[0\].estimator"):
        E.mixture([("a", 1.0, "pes")])
