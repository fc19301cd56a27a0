"""The task contract as a user writes it: a ridge-regression task of their own (a plain class,
not from metaopt.tasks), the L2 penalty inside ``loss(params, batch, hparams)``.

The validation objective must not see the metaparameters unless the task asks for it, so IFT
and RMD at the converged inner solution match the closed-form hypergradient of the *unpenalized*
validation loss, ``d L_val(w*(lambda)) / d log lambda``; a task that sets
``valid_hparams = True`` gets the penalized validation objective's hypergradient instead."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt import hypergrad as hg
from metaopt.estimators import NoState
from metaopt.inner import inner_problem, truncation

N, D, ETA, STEPS = 60, 5, 0.5, 300


class Ridge:
    """Ridge regression, full batch; ``hparams`` is ``log lambda``."""

    name = "user_ridge"

    def __init__(self, valid_hparams: bool = False):
        kx, ky, kv, kw = jax.random.split(jax.random.key(7), 4)
        w_true = jax.random.normal(kw, (D,))
        x, xv = jax.random.normal(kx, (N, D)), jax.random.normal(kv, (N, D))
        self.data = {"train": (x, x @ w_true + 0.5 * jax.random.normal(ky, (N,))),
                     "valid": (xv, xv @ w_true)}
        self.valid_hparams = valid_hparams

    def init(self, key):
        return jnp.zeros((D,))

    def batch(self, key, split):
        x, y = self.data[split]
        return {"x": x, "y": y}

    def loss(self, w, batch, hparams=None):
        mse = 0.5 * jnp.mean((batch["x"] @ w - batch["y"]) ** 2)
        if hparams is None:
            return mse
        return mse + 0.5 * jnp.exp(hparams) * (w @ w)


def closed_form(task: Ridge, log_lam, penalized_valid: bool):
    """``d/d log lambda`` of the validation objective at ``w*(lambda)``, by the implicit
    function theorem on the normal equations ``(X^T X / n + lambda I) w* = X^T y / n``."""
    x, y = task.data["train"]
    xv, yv = task.data["valid"]
    lam = jnp.exp(log_lam)
    h = x.T @ x / N + lam * jnp.eye(D)
    w_star = jnp.linalg.solve(h, x.T @ y / N)
    dw = -lam * jnp.linalg.solve(h, w_star)  # dw*/dlog lambda
    grad_val = xv.T @ (xv @ w_star - yv) / N
    if not penalized_valid:
        return grad_val @ dw
    return (grad_val + lam * w_star) @ dw + 0.5 * lam * (w_star @ w_star)


@pytest.mark.parametrize("valid_hparams", [False, True])
def test_ift_and_rmd_match_the_closed_form_on_a_user_ridge_task(valid_hparams):
    with jax.enable_x64(True):
        task = Ridge(valid_hparams)
        problem = inner_problem(task, optax.sgd(ETA), schedule=truncation.constant(STEPS),
                                hparams_fn=lambda log_lam: log_lam)
        ests = [hg.ift(problem, num_terms=STEPS), hg.rmd(problem), hg.fo(problem)]
        run = jax.jit(lambda k, a: [e.estimate(k, a, NoState())[0] for e in ests])
        for log_lam in (-2.0, 0.0):
            alpha = jnp.asarray(log_lam)
            want = closed_form(task, alpha, penalized_valid=valid_hparams)
            other = closed_form(task, alpha, penalized_valid=not valid_hparams)
            ift, rmd, fo = run(jax.random.key(0), alpha)
            np.testing.assert_allclose(ift, want, rtol=1e-7)
            np.testing.assert_allclose(rmd, want, rtol=1e-7)
            assert abs(other - want) > 1e-2 * abs(want)  # the two contracts differ here
            # FO (the direct term) is zero unless the validation objective sees lambda
            assert (float(fo) == 0.0) == (not valid_hparams)
