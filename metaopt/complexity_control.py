"""Parametric complexity control with a hypernetwork (Grebenkova, Bakhteev & Strijov 2023,
"Deep learning model selection with parametric complexity control", ICAART; the seed's
"Example: CIFAR-10").

A hypernetwork ``G(lam)`` (:mod:`metaopt.hypernet`) outputs a Gaussian variational
distribution ``q_lam(w) = N(mu(lam), diag sigma(lam)^2)`` over a model's weights; one ``G`` is
trained for a whole range of the complexity metaparameter ``lam`` on

    E_{lam ~ p(lam)} [ E_{w ~ q_lam} -(1/N) log p(Y | X, w) + (lam / N) KL(q_lam || N(0, s^2 I)) ]

(``lam = 1`` is the evidence lower bound per example; ``lam -> 0`` ignores complexity, large
``lam`` buys a simpler model), with ``p(lam)`` log-uniform (:func:`sample_log_uniform`); the
hypernetwork reads ``log10 lam``. At test time the model is the mean ``mu(lam)``; its
complexity is read off by magnitude pruning: :func:`magnitude_prune` zeroes the fraction of
parameters with the smallest ``|mu|``, :func:`pruned_fraction` counts those below a
threshold. The paper's claim: one hypernetwork yields, for every ``lam``, a model whose
robustness to pruning (and effective number of parameters) follows ``lam``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from metaopt.hypernet import Hypernet

PyTree = Any


def variational_template(params: PyTree, log_sigma: float = -4.0) -> dict:
    """``{"mu": params, "log_sigma": full(log_sigma)}``: the pytree a variational
    hypernetwork outputs (build it with ``mlp_hypernet(variational_template(params))``)."""
    return {"mu": params, "log_sigma": jax.tree.map(lambda x: jnp.full_like(x, log_sigma),
                                                    params)}


def gaussian_kl(mu: PyTree, log_sigma: PyTree, prior_std: float) -> jax.Array:
    """``KL(N(mu, sigma^2) || N(0, s^2))`` summed over every parameter:
    ``sum log(s / sigma) + (sigma^2 + mu^2) / (2 s^2) - 1/2``."""
    if not prior_std > 0:
        raise ValueError(f"prior_std: must be positive, got {prior_std!r}")
    m, _ = ravel_pytree(mu)
    ls, _ = ravel_pytree(log_sigma)
    s2 = prior_std ** 2
    return jnp.sum(jnp.log(prior_std) - ls + (jnp.exp(2 * ls) + m ** 2) / (2 * s2) - 0.5)


def sample_log_uniform(key: jax.Array, low: float, high: float, shape=()) -> jax.Array:
    """``lam`` with ``log10 lam ~ U(log10 low, log10 high)``."""
    if not 0 < low < high:
        raise ValueError(f"low, high: need 0 < low < high, got {low!r}, {high!r}")
    u = jax.random.uniform(key, shape, minval=jnp.log10(low), maxval=jnp.log10(high))
    return 10.0 ** u


def complexity_loss(hypernet: Hypernet, nll: Callable[[PyTree], jax.Array], phi: PyTree,
                    key: jax.Array, lams: jax.Array, *, num_train: int,
                    prior_std: float = 1.0) -> jax.Array:
    """The objective above for the batch of metaparameters ``lams [S]`` (one reparametrised
    weight sample per ``lam``): ``mean_s nll(mu_s + sigma_s eps_s) + lam_s KL_s / N``, where
    ``nll(params)`` is the mean negative log-likelihood of a data batch."""

    def one(k, lam):
        q = hypernet.apply(phi, jnp.log10(lam))
        mu, unravel = ravel_pytree(q["mu"])
        ls, _ = ravel_pytree(q["log_sigma"])
        w = mu + jnp.exp(ls) * jax.random.normal(k, mu.shape, mu.dtype)
        kl = gaussian_kl(q["mu"], q["log_sigma"], prior_std)
        return nll(unravel(w)) + lam * kl / num_train

    return jnp.mean(jax.vmap(one)(jax.random.split(key, lams.shape[0]), lams))


def magnitude_prune(params: PyTree, fraction: jax.Array) -> PyTree:
    """Zero the ``floor(fraction * P)`` parameters with the smallest ``|w|`` (over the whole
    pytree; ties broken by position). ``fraction`` may be traced."""
    flat, unravel = ravel_pytree(params)
    k = jnp.floor(jnp.asarray(fraction) * flat.size).astype(jnp.int32)
    rank = jnp.argsort(jnp.argsort(jnp.abs(flat)))  # 0 = smallest magnitude
    return unravel(jnp.where(rank < k, 0.0, flat))


def pruned_fraction(params: PyTree, threshold: float) -> jax.Array:
    """Fraction of parameters with ``|w| < threshold`` (pruned at that magnitude)."""
    flat, _ = ravel_pytree(params)
    return jnp.mean(jnp.abs(flat) < threshold)
