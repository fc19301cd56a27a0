"""Hypernetworks: a map from metaparameters ``lambda`` to a model's weights ``w(lambda)``.

A hypernetwork (Ha et al. 2016; the seed's definition ``G: Lambda x R^u -> R^n``) is a pair

    init(key) -> phi,        apply(phi, lam) -> params,

with ``phi`` the hypernetwork's own weights (a pytree), ``lam`` a float array ``[k]`` (or a
scalar, read as ``[1]``) and ``params`` a pytree shaped like the ``template`` it was built for.

* :func:`mlp_hypernet` -- ``w(lam) = w_0 + W_2 tanh(W_1 lam + b_1)``: Lorraine & Duvenaud's
  *global* best-response hypernetwork (one hidden layer, 50 units in the paper);
* :func:`linear_hypernet` -- ``w(lam) = w_0 + W (lam - c)``: their *local* hypernetwork, a
  first-order model of the best response around ``c``.

Best response (Lorraine & Duvenaud 2018, "Stochastic hyperparameter optimization through
hypernetworks"): train ``phi`` on

    E_{lam ~ p(lam)} [ L_train(w_phi(lam), lam) ]                                (1)

(:func:`best_response_loss`, Monte Carlo over ``lam``); a hypernetwork expressive enough
minimises (1) pointwise, ``w_phi(lam) = argmin_w L_train(w, lam)`` on the support of ``p``,
so ``lam -> L_val(w_phi(lam))`` is the validation loss of the best response and can be
descended in ``lam`` by ordinary autodiff (:func:`tune_lambda`). *Global*: one wide ``p``,
then tune. *Local*: alternate a few steps of (1) with ``p = N(lam_hat, sigma^2)`` and a few
steps of ``lam_hat`` on ``L_val(w_phi(lam_hat))`` (:func:`alternate`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

PyTree = Any


class Hypernet(NamedTuple):
    """``init(key) -> phi`` and ``apply(phi, lam) -> params`` (``lam``: ``[in_dim]`` or scalar)."""

    init: Callable[[jax.Array], PyTree]
    apply: Callable[[PyTree, jax.Array], PyTree]
    in_dim: int


def _lam(lam: jax.Array, in_dim: int) -> jax.Array:
    lam = jnp.atleast_1d(jnp.asarray(lam))
    if lam.shape != (in_dim,):
        raise ValueError(f"lam: expected shape ({in_dim},) or a scalar, got {lam.shape}")
    return lam


def _check_dims(in_dim: object, hidden: object = 1) -> None:
    for name, v in (("in_dim", in_dim), ("hidden", hidden)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}: must be a positive integer, got {v!r}")


def mlp_hypernet(template: PyTree, *, hidden: int = 50, in_dim: int = 1,
                 out_scale: float = 0.01, center: float = 0.0, scale: float = 1.0) -> Hypernet:
    """``w(lam) = unravel(w_0 + W_2 tanh(W_1 (lam - center) / scale + b_1))``,
    ``W_1: [hidden, in_dim]``, ``W_2: [P, hidden]``; ``w_0`` starts at ``template`` (the
    model's own init), ``W_2`` at ``out_scale`` times a standard normal / sqrt(hidden),
    ``W_1`` and ``b_1`` standard normal (``center`` / ``scale``: the range of ``lam``, so
    that the hidden units are not saturated)."""
    _check_dims(in_dim, hidden)
    if not scale > 0:
        raise ValueError(f"scale: must be positive, got {scale!r}")
    flat, unravel = ravel_pytree(template)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"w0": flat,
                "w1": jax.random.normal(k1, (hidden, in_dim), flat.dtype),
                "b1": jax.random.normal(k2, (hidden,), flat.dtype),
                "w2": out_scale * jax.random.normal(k3, (flat.size, hidden), flat.dtype)
                / jnp.sqrt(hidden)}

    def apply(phi, lam):
        h = jnp.tanh(phi["w1"] @ ((_lam(lam, in_dim) - center) / scale) + phi["b1"])
        return unravel(phi["w0"] + phi["w2"] @ h)

    return Hypernet(init=init, apply=apply, in_dim=in_dim)


def linear_hypernet(template: PyTree, *, in_dim: int = 1) -> Hypernet:
    """``w(lam) = unravel(w_0 + W (lam - c))`` with ``phi = {w0, w, c}``; ``W`` starts at 0
    and ``c`` (the expansion point: no gradient flows into it; :func:`alternate` moves it) at 0."""
    _check_dims(in_dim)
    flat, unravel = ravel_pytree(template)

    def init(key):
        del key
        return {"w0": flat, "w": jnp.zeros((flat.size, in_dim), flat.dtype),
                "c": jnp.zeros((in_dim,), flat.dtype)}

    def apply(phi, lam):
        c = jax.lax.stop_gradient(phi["c"])
        return unravel(phi["w0"] + phi["w"] @ (_lam(lam, in_dim) - c))

    return Hypernet(init=init, apply=apply, in_dim=in_dim)


def best_response_loss(hypernet: Hypernet, train_loss: Callable[[PyTree, jax.Array], jax.Array],
                       phi: PyTree, key: jax.Array, mean: jax.Array, std: float,
                       num_samples: int = 8) -> jax.Array:
    """Monte Carlo of (1) with ``lam ~ N(mean, std^2 I)`` (``std`` a scalar), ``num_samples``
    draws: ``mean_s train_loss(apply(phi, lam_s), lam_s)``."""
    mean = _lam(mean, hypernet.in_dim)
    eps = jax.random.normal(key, (num_samples, hypernet.in_dim), mean.dtype)
    lams = mean[None] + jnp.asarray(std, mean.dtype) * eps
    return jnp.mean(jax.vmap(lambda lam: train_loss(hypernet.apply(phi, lam), lam))(lams))


def fit_hypernet(hypernet: Hypernet, train_loss, phi: PyTree, key: jax.Array, *, mean, std,
                 steps: int, optimizer: optax.GradientTransformation,
                 opt_state: PyTree | None = None, num_samples: int = 8):
    """``steps`` optimizer steps on (1). Returns ``(phi, opt_state, losses[steps])``."""
    opt_state = optimizer.init(phi) if opt_state is None else opt_state
    value_and_grad = jax.value_and_grad(
        lambda p, k: best_response_loss(hypernet, train_loss, p, k, mean, std, num_samples))

    def body(carry, k):
        p, s = carry
        loss, g = value_and_grad(p, k)
        upd, s = optimizer.update(g, s, p)
        return (optax.apply_updates(p, upd), s), loss

    (phi, opt_state), losses = jax.lax.scan(body, (phi, opt_state), jax.random.split(key, steps))
    return phi, opt_state, losses


def tune_lambda(hypernet: Hypernet, val_loss: Callable[[PyTree], jax.Array], phi: PyTree,
                lam: jax.Array, *, steps: int, optimizer: optax.GradientTransformation,
                opt_state: PyTree | None = None):
    """``steps`` optimizer steps of ``lam`` on ``val_loss(apply(phi, lam))`` (gradient
    through the hypernetwork). Returns ``(lam, opt_state, val_losses[steps])``."""
    lam = _lam(lam, hypernet.in_dim)
    opt_state = optimizer.init(lam) if opt_state is None else opt_state
    value_and_grad = jax.value_and_grad(lambda lm: val_loss(hypernet.apply(phi, lm)))

    def body(carry, _):
        lm, s = carry
        loss, g = value_and_grad(lm)
        upd, s = optimizer.update(g, s, lm)
        return (optax.apply_updates(lm, upd), s), loss

    (lam, opt_state), losses = jax.lax.scan(body, (lam, opt_state), None, length=steps)
    return lam, opt_state, losses


class AlternateOut(NamedTuple):
    phi: PyTree
    lam: jax.Array  # [in_dim] the final lam_hat
    lam_path: jax.Array  # [rounds, in_dim] lam_hat after each round
    val_loss: jax.Array  # [rounds] L_val(w_phi(lam_hat)) at the end of each round


def alternate(hypernet: Hypernet, train_loss, val_loss, phi: PyTree, lam: jax.Array,
              key: jax.Array, *, rounds: int, hyper_steps: int, lam_steps: int, std: float,
              hyper_optimizer: optax.GradientTransformation,
              lam_optimizer: optax.GradientTransformation,
              num_samples: int = 8) -> AlternateOut:
    """Lorraine & Duvenaud's Algorithm 2 (local best response): ``rounds`` times, fit ``phi``
    for ``hyper_steps`` on (1) with ``p = N(lam_hat, std^2)``, then ``lam_steps`` steps of
    ``lam_hat`` on ``L_val(w_phi(lam_hat))``. A :func:`linear_hypernet`'s expansion point
    ``c`` moves to ``lam_hat`` at each round, with ``w_0`` re-expanded there (the same
    function). Optimizer states persist across rounds."""
    lam = _lam(lam, hypernet.in_dim)
    h_state, l_state = hyper_optimizer.init(phi), lam_optimizer.init(lam)

    def body(carry, k):
        p, lm, hs, ls = carry
        if isinstance(p, dict) and "c" in p:  # re-expand the linear model at lam_hat
            p = {**p, "w0": p["w0"] + p["w"] @ (lm - p["c"]), "c": lm}
        p, hs, _ = fit_hypernet(hypernet, train_loss, p, k, mean=lm, std=std,
                                steps=hyper_steps, optimizer=hyper_optimizer, opt_state=hs,
                                num_samples=num_samples)
        lm, ls, losses = tune_lambda(hypernet, val_loss, p, lm, steps=lam_steps,
                                     optimizer=lam_optimizer, opt_state=ls)
        return (p, lm, hs, ls), (lm, losses[-1])

    (phi, lam, _, _), (path, vals) = jax.lax.scan(
        body, (phi, lam, h_state, l_state), jax.random.split(key, rounds))
    return AlternateOut(phi=phi, lam=lam, lam_path=path, val_loss=vals)
