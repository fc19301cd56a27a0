"""metaopt.train.baselines: the switched union optimizer equals its members, and the tuned
learning rate is the one the closed form says is best."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks import least_squares_family, quadratic_family
from metaopt.train import baselines as bl


@pytest.mark.slow  # two compiled unrolls: ~15 s on a quiet 2-core machine
def test_switch_optimizer_reproduces_each_member():
    fam = least_squares_family(dim=5)
    keys = jnp.stack([jax.random.key(7)] * 3)
    lrs = jnp.asarray([0.01, 0.003, 0.02], jnp.float32)
    makers = [bl.OPTAX_BASELINES[n] for n in ("NAG", "Adam", "SGD")]
    union = bl.batched_curves(fam, bl.switch_optimizer(makers),
                              (jnp.arange(3, dtype=jnp.int32), lrs), keys, 12, 3)
    alone = bl.batched_curves(fam, makers[1], lrs, keys, 12, 3)  # Adam at every lr
    np.testing.assert_allclose(union["loss"][1], alone["loss"][1], rtol=1e-6)  # member 1
    # the other members are not Adam (step 0 is the shared initial loss)
    assert np.all(np.abs(union["loss"][[0, 2], :, 1:] - alone["loss"][[0, 2], :, 1:]) > 0)
    assert not union["diverged"].any()


@pytest.mark.slow  # one compiled unroll of the 4-point grid: ~12 s on a quiet machine
def test_tuned_sgd_picks_the_newton_step_and_flags_divergence():
    # f = 1/2 * 2 (w - c)^2 (one eigenvalue 2): SGD at lr 1/2 lands on the minimum in one step
    # (up to float32 rounding); lr 0.1 and 0.9 contract by |1 - 2 lr| = 0.8 per step; lr 10
    # oscillates with growing amplitude 19 and overflows to inf within 20 steps.
    fam = quadratic_family(dim=1, max_eig=2.0, condition_number=1.0)
    grid = (0.1, 0.5, 0.9, 10.0)
    res = bl.tuned_baselines(fam, 20, 2, jax.random.key(0),
                             jax.random.split(jax.random.key(1), 4), lrs=grid,
                             baselines={"SGD": bl.OPTAX_BASELINES["SGD"]})["SGD"]
    assert res["lr"] == 0.5
    assert res["grid_final"][1] < 1e-12 and res["grid_final"][3] == np.inf
    assert res["grid_final"][0] > 1e-12 and res["grid_final"][2] > 1e-12
    assert res["loss"].shape == (4, 2, 20) and not res["diverged"].any()
    np.testing.assert_allclose(res["loss"][:, :, 1:], 0.0, atol=1e-12)  # float32 rounding


def test_batched_curves_bad_input():
    fam = least_squares_family(dim=2)
    with pytest.raises(ValueError, match="thetas: leading axes"):
        bl.batched_curves(fam, bl.OPTAX_BASELINES["SGD"], jnp.ones(3),
                          jax.random.split(jax.random.key(0), 2), 5, 1)
    with pytest.raises(ValueError, match="makers: needs at least one"):
        bl.switch_optimizer([])
