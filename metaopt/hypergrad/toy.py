"""The quadratic toy of Shaban et al. (2019) used by the seed: w in R^2, Hessian diag(1, 1/2).

    L_train(w, alpha) = 1/2 (w - alpha)^T H (w - alpha),    H = diag(h) (default (1, 1/2)),
    L_val(w)          = 1/2 ||w - c||^2,
    Phi(w, alpha)     = w - eta H (w - alpha)                (gradient descent, eta = lr),

so ``A = I - eta H`` and ``B = eta H`` are constant and ``alpha`` (the training optimum) is the
hyperparameter. An episode samples the validation target ``c ~ N(0, I)`` and the start
``w_0 ~ N(0, I)``; the batch is ``None`` (deterministic). The exact hypergradient has the
closed form ``(1 - (1 - eta h)^T) (w_T - c)`` elementwise (:func:`shaban_exact`).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.hypergrad.bilevel import Bilevel, check_horizon


def _check(hessian: Sequence[float], lr: float) -> np.ndarray:
    h = np.asarray(hessian, np.float64)
    if h.ndim != 1 or h.shape[0] < 1 or not np.all(h > 0):
        raise ValueError(
            f"hessian: must be a non-empty sequence of positive numbers, got {hessian!r}"
        )
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 < lr * h.max() < 2:
        raise ValueError(f"lr: must be a number in (0, 2 / max(hessian)), got {lr!r}")
    return h


def shaban_toy(
    horizon: int, *, hessian: Sequence[float] = (1.0, 0.5), lr: float = 0.1
) -> Bilevel:
    """The toy bilevel problem with ``T = horizon`` gradient-descent steps of rate ``lr``."""
    horizon = check_horizon(horizon)
    h = _check(hessian, lr)
    dim = h.shape[0]

    def init(key, alpha):
        k_c, k_w = jax.random.split(key)
        dtype = jnp.result_type(alpha)
        cfg = {"c": jax.random.normal(k_c, (dim,), dtype)}
        return cfg, jax.random.normal(k_w, (dim,), dtype)

    def batch(key, cfg):
        del key
        return cfg

    def phi(w, alpha, b):
        return w - lr * jnp.asarray(h, w.dtype) * (w - alpha)

    def val_loss(w, alpha, b):
        del alpha
        return 0.5 * jnp.sum((w - b["c"]) ** 2)

    return Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon,
                   name=f"shaban_toy_{dim}d")


def shaban_exact(w_T: jax.Array, c: jax.Array, horizon: int, *,
                 hessian: Sequence[float] = (1.0, 0.5), lr: float = 0.1) -> jax.Array:
    """The exact hypergradient ``(1 - (1 - lr h)^T) (w_T - c)`` of the toy."""
    h = jnp.asarray(_check(hessian, lr), w_T.dtype)
    return (1.0 - (1.0 - lr * h) ** horizon) * (w_T - c)
