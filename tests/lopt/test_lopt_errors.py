"""Wrong arguments to a learned optimizer raise ValueError / TypeError naming the argument and
what was expected (issue 15, item 8), not an error from deep inside the update."""

import jax
import jax.numpy as jnp
import pytest

from metaopt import lopt

P = {"w": jnp.ones((3,))}


@pytest.fixture(scope="module")
def small():
    lo = lopt.make("mlp_small")
    return lo, lo.init(jax.random.key(0))


def _update(lo, theta, grads, params, init_params=P):
    tx = lo.optimizer(theta)
    return tx.update(grads, tx.init(init_params), params)


@pytest.mark.parametrize("case, exc, needle", [
    ("empty params", ValueError, "params: mlp_small needs at least one parameter array"),
    ("python float leaf", TypeError, "params: ['w'] is a float"),
    ("integer params", TypeError, "params: ['w'] has dtype int32"),
    ("gradient shapes", ValueError, "updates: the gradients do not match params (['w'] has "
                                    "shape (4,), expected (3,))"),
    ("gradients vs state", ValueError, "updates: do not fit the optimizer state of mlp_small"),
    ("theta of another optimizer", ValueError, "theta: does not fit the learned optimizer "
                                               "mlp_small"),
])
def test_wrong_arguments_name_what_was_expected(small, case, exc, needle):
    lo, theta = small
    run = {
        "empty params": lambda: lo.optimizer(theta).init({}),
        "python float leaf": lambda: lo.optimizer(theta).init({"w": 1.0}),
        "integer params": lambda: lo.optimizer(theta).init({"w": jnp.ones(3, jnp.int32)}),
        "gradient shapes": lambda: _update(lo, theta, {"w": jnp.ones((4,))}, P),
        "gradients vs state": lambda: _update(lo, theta, {"v": jnp.ones(3)}, {"v": jnp.ones(3)}),
        "theta of another optimizer": lambda: lo.optimizer(
            lopt.make("mlp").init(jax.random.key(0))),
    }[case]
    with pytest.raises(exc) as info:
        run()
    assert needle in str(info.value), str(info.value)


def test_hparam_theta_is_checked_when_the_optimizer_is_made():
    with pytest.raises(ValueError, match=r"theta: does not fit the learned optimizer sgd "
                                         r"\(expected keys \[\"\['log_lr'\]\"\]"):
        lopt.make("sgd").optimizer({"lr": jnp.asarray(0.1)})


def test_unknown_option_lists_the_allowed_ones():
    with pytest.raises(ValueError, match=r"mlp.bogus: unknown option 'bogus'; allowed options "
                                         r"are \['hidden'"):
        lopt.make("mlp", bogus=1)
