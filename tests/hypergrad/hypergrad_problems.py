"""Small bilevel problems with known hypergradients for the hypergradient tests.

* :func:`identity_jacobian` -- ``Phi(w, alpha; b) = w - eta g(alpha, b)``, so ``A_t = I``;
  ``L_val = c^T w + 1/2 ||alpha||^2`` (linear in ``w``) or ``1/2 ||w - c||^2`` (not).
* :func:`ridge` -- ridge regression trained by gradient descent, ``alpha = log lambda``, with
  the closed-form validation-loss hypergradient at the exact minimiser.
* :func:`tiny_digits_task` -- a float64 pure-jnp MLP on 200 digits, for finite differences.

:func:`jit` compiles with LLVM optimization off: 3-4x faster compiles on the 2-core CPU for
these tiny programs, same numbers up to rounding.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt import tasks
from metaopt.hypergrad import Bilevel
from metaopt.tasks.data.arrays import sample_indices

FAST_COMPILE = {"xla_backend_optimization_level": 0}


def jit(fn, **kwargs):
    """``jax.jit`` with fast (unoptimized) XLA CPU compilation."""
    return jax.jit(fn, compiler_options=FAST_COMPILE, **kwargs)


def identity_jacobian(horizon: int, *, dim: int = 4, hdim: int = 3, eta: float = 0.1,
                      linear_val: bool = True) -> Bilevel:
    m = jax.random.normal(jax.random.key(42), (dim, hdim))

    def init(key, alpha):
        k_c, k_w = jax.random.split(key)
        return {"c": jax.random.normal(k_c, (dim,))}, jax.random.normal(k_w, (dim,))

    def batch(key, cfg):
        return {"c": cfg["c"], "b": jax.random.normal(key, (hdim,))}

    def phi(w, alpha, b):
        return w - eta * jnp.tanh(m @ (alpha + b["b"]))

    def val_loss(w, alpha, b):
        if linear_val:
            return b["c"] @ w + 0.5 * alpha @ alpha
        return 0.5 * jnp.sum((w - b["c"]) ** 2)

    return Bilevel(init=init, batch=batch, phi=phi, val_loss=val_loss, horizon=horizon)


def ridge(horizon: int, *, n: int = 60, d: int = 5, eta: float = 0.5):
    """``(bilevel, exact(alpha) -> dL_val(w*)/dlog lambda)``; deterministic, full batch."""
    kx, ky, kv, kw = jax.random.split(jax.random.key(7), 4)
    w_true = jax.random.normal(kw, (d,))
    x = jax.random.normal(kx, (n, d))
    y = x @ w_true + 0.5 * jax.random.normal(ky, (n,))
    xv = jax.random.normal(kv, (n, d))
    yv = xv @ w_true

    def train_loss(w, alpha):
        return 0.5 * jnp.mean((x @ w - y) ** 2) + 0.5 * jnp.exp(alpha) * (w @ w)

    def val(w):
        return 0.5 * jnp.mean((xv @ w - yv) ** 2)

    def init(key, alpha):
        del key, alpha
        return jnp.zeros((0,)), jnp.zeros((d,))

    bilevel = Bilevel(
        init=init,
        batch=lambda key, cfg: None,
        phi=lambda w, alpha, b: w - eta * jax.grad(train_loss)(w, alpha),
        val_loss=lambda w, alpha, b: val(w),
        horizon=horizon,
    )

    def exact(alpha):
        lam = jnp.exp(alpha)
        h = x.T @ x / n + lam * jnp.eye(d)
        w_star = jnp.linalg.solve(h, x.T @ y / n)
        dw = -lam * jnp.linalg.solve(h, w_star)
        return jax.grad(val)(w_star) @ dw

    return bilevel, exact


def tiny_digits_task(n_train: int = 200, hidden: int = 8, batch_size: int = 16) -> tasks.Task:
    """A pure-jnp MLP 64-hidden-10 on ``n_train`` digits (float64 under x64), weighted by
    example through ``hparams`` (logits ``[n_train]``) like :func:`tasks.classification_task`."""
    data = tasks.load_digits()
    dt = jnp.result_type(float)
    xs = {s: jnp.asarray(data.splits[s][0].reshape(-1, 64), dt)[:n_train]
          for s in ("train", "valid")}
    ys = {s: jnp.asarray(data.splits[s][1])[:n_train] for s in ("train", "valid")}

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"w1": jax.random.normal(k1, (64, hidden), dt) / 8.0,
                "b1": jnp.zeros((hidden,), dt),
                "w2": jax.random.normal(k2, (hidden, 10), dt) / hidden**0.5}

    def batch(key, split):
        idx = sample_indices(key, xs[split].shape[0], batch_size)
        return {"x": xs[split][idx], "y": ys[split][idx], "idx": idx,
                "train": jnp.asarray(split == "train")}

    def loss(p, b, hparams=None):
        logits = jnp.tanh(b["x"] @ p["w1"] + p["b1"][None, :]) @ p["w2"]
        per = -jnp.take_along_axis(jax.nn.log_softmax(logits), b["y"][:, None], 1)[:, 0]
        if hparams is None:
            return jnp.mean(per)
        wts = jnp.where(b["train"], jax.nn.sigmoid(hparams[b["idx"]]), 1.0)
        return jnp.mean(wts * per)

    return tasks.Task(init=init, loss=loss, batch=batch, name="tiny_digits")
