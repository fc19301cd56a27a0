"""The noisy quadratic model (NQM) of Wu, Ren, Liao & Grosse 2018 (ICLR, arXiv 1803.02021).

    L(theta; c) = 1/2 sum_i h_i (theta_i - c_i)^2,   c_i ~ N(0, sigma_i^2) drawn fresh every step,

``n`` independent coordinates with curvatures ``h_i`` log-spaced from ``min_curvature`` to
``max_curvature`` (three orders of magnitude by default) and noise ``sigma_i^2 = noise_scale *
h_i`` (the "sigma^2 proportional to h" setting of the paper). A batch is the sampled centre
``{"c": [n]}``; the stochastic gradient ``h_i (theta_i - c_i)`` has mean ``h_i theta_i`` and
variance ``h_i^2 sigma_i^2``. The init is ``theta_0 ~ N(init_mean, init_std^2 I)``.

Expected loss of an optimizer run (the closed form of :func:`nqm_expected_loss`). With
heavy-ball momentum written as optax does (``optax.sgd(lr, momentum=beta)``, i.e.
``optax.trace`` then the learning rate),

    v_{t+1} = beta_t v_t + g_t,   theta_{t+1} = theta_t - alpha_t v_{t+1},   v_0 = 0,

each coordinate's state ``s_t = (theta_t, v_t)`` evolves linearly in the noise,
``s_{t+1} = A_t s_t + b_t c_t`` with

    A_t = [[1 - alpha_t h, -alpha_t beta_t], [h, beta_t]],   b_t = (alpha_t h, -h),

so its mean and 2x2 covariance follow exactly:

    mu_{t+1} = A_t mu_t,   P_{t+1} = A_t P_t A_t^T + sigma^2 b_t b_t^T.

``beta = 0`` is SGD: ``E theta_{t+1} = (1 - alpha h) E theta_t`` and
``Var theta_{t+1} = (1 - alpha h)^2 Var theta_t + alpha^2 h^2 sigma^2``. The returned
expectation (over the init and every sampled ``c``) is the *excess* loss

    E[L(theta_t)] = 1/2 sum_i h_i (E[theta_{t,i}]^2 + Var[theta_{t,i}]),

i.e. the loss at the mean centre ``c = 0``, without the irreducible noise term
``1/2 sum_i h_i sigma_i^2``; ``include_noise=True`` adds that term, giving the expected
minibatch loss ``E[L(theta_t; c_t)]`` at a fresh ``c_t`` (what an inner problem reports as the
training loss of step ``t``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, check_split


class NQMConfig(NamedTuple):
    """One NQM, all ``[n]`` float arrays: curvatures ``h``, noise ``sigma^2``, init moments."""

    curvature: jax.Array  # h_i > 0
    noise_var: jax.Array  # sigma_i^2 >= 0, the variance of c_i
    init_mean: jax.Array  # E theta_{0,i}
    init_var: jax.Array  # Var theta_{0,i}


def nqm_config(
    dim: int = 1000,
    min_curvature: float = 1e-3,
    max_curvature: float = 1.0,
    noise_scale: float = 1.0,
    init_mean: float = 1.0,
    init_std: float = 0.0,
) -> NQMConfig:
    """``h_i`` log-spaced on ``[min_curvature, max_curvature]``, ``sigma_i^2 = noise_scale h_i``."""
    validate.positive_int("dim", dim)
    lo = validate.positive_float("min_curvature", min_curvature)
    hi = validate.positive_float("max_curvature", max_curvature)
    if lo > hi:
        raise ValueError(
            f"min_curvature: {lo} must not exceed max_curvature ({hi}); "
            f"allowed values are (0, {hi}]"
        )
    validate.in_range("noise_scale", noise_scale, 0.0, math.inf)
    validate.in_range("init_mean", init_mean, -math.inf, math.inf)
    validate.in_range("init_std", init_std, 0.0, math.inf)
    h = jnp.exp(jnp.linspace(math.log(lo), math.log(hi), dim)).astype(jnp.float32)
    full = lambda v: jnp.full((dim,), v, jnp.float32)
    return NQMConfig(h, noise_scale * h, full(init_mean), full(init_std**2))


def nqm_task(cfg: NQMConfig) -> Task:
    """The NQM as a :class:`~tasks.base.Task`: params ``theta [n]``, batch ``{"c": [n]}``.

    Every split samples ``c`` from the same distribution (the model has no train/test gap).
    ``metrics`` gives the exact ``expected_loss = E_c L(theta; c) = 1/2 sum h (theta^2 + sigma^2)``
    and ``excess_loss = 1/2 sum h theta^2`` of the current ``theta``.
    """
    dim = cfg.curvature.shape[-1]

    def init(key):
        return cfg.init_mean + jnp.sqrt(cfg.init_var) * jax.random.normal(key, (dim,))

    def batch(key, split):
        check_split(split)
        return {"c": jnp.sqrt(cfg.noise_var) * jax.random.normal(key, (dim,))}

    def loss(theta, b, hparams=None):
        return 0.5 * jnp.sum(cfg.curvature * jnp.square(theta - b["c"]))

    def metrics(theta, b):
        excess = 0.5 * jnp.sum(cfg.curvature * jnp.square(theta))
        return {"excess_loss": excess, "expected_loss": excess + noise_floor(cfg)}

    return Task(init=init, loss=loss, batch=batch, metrics=metrics, name=f"nqm_{dim}d")


def nqm(
    dim: int = 1000,
    min_curvature: float = 1e-3,
    max_curvature: float = 1.0,
    noise_scale: float = 1.0,
    init_mean: float = 1.0,
    init_std: float = 0.0,
) -> Task:
    """The NQM task of :func:`nqm_config` (arguments documented there)."""
    return nqm_task(nqm_config(dim, min_curvature, max_curvature, noise_scale, init_mean, init_std))


def noise_floor(cfg: NQMConfig) -> jax.Array:
    """The irreducible expected loss ``1/2 sum_i h_i sigma_i^2`` (scalar)."""
    return 0.5 * jnp.sum(cfg.curvature * cfg.noise_var)


def nqm_expected_loss(
    cfg: NQMConfig,
    learning_rates: jax.Array,
    momentum: float | jax.Array = 0.0,
    include_noise: bool = False,
) -> jax.Array:
    """Exact expected loss of SGD / heavy-ball momentum on the NQM, ``[T + 1]`` for t = 0..T.

    Args:
      cfg: the model.
      learning_rates: ``alpha_t``, shape ``[T]``; step ``t`` maps ``theta_t`` to ``theta_{t+1}``.
      momentum: ``beta_t``, a scalar or shape ``[T]`` (0 is plain SGD), in the optax convention
        of the module docstring.
      include_noise: static; add the irreducible ``1/2 sum h sigma^2`` (see module docstring).

    Returns:
      ``E[L(theta_t)]`` for ``t = 0..T`` (entry 0 is the init). One ``lax.scan`` of O(n) work per
      step; jittable and differentiable in ``learning_rates``, ``momentum`` and ``cfg``.
    """
    lrs = jnp.asarray(learning_rates)
    if not jnp.issubdtype(lrs.dtype, jnp.floating):
        lrs = lrs.astype(jnp.float32)
    if lrs.ndim != 1:
        raise ValueError(f"learning_rates: must have shape [T], got shape {lrs.shape}")
    betas = jnp.broadcast_to(jnp.asarray(momentum, lrs.dtype), lrs.shape)

    def step(s, ab):
        return nqm_moment_step(cfg, s, *ab), nqm_excess_loss(cfg, s)

    first = nqm_moments_init(cfg)
    last, losses = jax.lax.scan(step, first, (lrs, betas))
    out = jnp.append(losses, nqm_excess_loss(cfg, last))
    return out + noise_floor(cfg) if include_noise else out


class NQMMoments(NamedTuple):
    """Per-coordinate first and second moments of ``s_t = (theta_t, v_t)``, each ``[n]``."""

    mean: jax.Array  # E theta
    mean_v: jax.Array  # E v
    var: jax.Array  # Var theta
    cov: jax.Array  # Cov(theta, v)
    var_v: jax.Array  # Var v


def nqm_moments_init(cfg: NQMConfig) -> NQMMoments:
    """The moments at ``t = 0``: ``theta_0 ~ N(init_mean, init_var)``, ``v_0 = 0``."""
    zero = jnp.zeros_like(cfg.curvature)
    return NQMMoments(cfg.init_mean, zero, cfg.init_var, zero, zero)


def nqm_moment_step(cfg: NQMConfig, s: NQMMoments, alpha, beta=0.0) -> NQMMoments:
    """One exact step ``mu' = A mu``, ``P' = A P A^T + sigma^2 b b^T`` (module docstring) of
    heavy-ball momentum ``beta`` with rate ``alpha`` (scalars or ``[n]``)."""
    h, s2 = cfg.curvature, cfg.noise_var
    m, w, p, q, r = s
    a11, a12, a21, a22 = 1.0 - alpha * h, -alpha * beta, h, beta
    b1, b2 = alpha * h, -h
    return NQMMoments(
        a11 * m + a12 * w,
        a21 * m + a22 * w,
        a11 * a11 * p + 2.0 * a11 * a12 * q + a12 * a12 * r + s2 * b1 * b1,
        a11 * a21 * p + (a11 * a22 + a12 * a21) * q + a12 * a22 * r + s2 * b1 * b2,
        a21 * a21 * p + 2.0 * a21 * a22 * q + a22 * a22 * r + s2 * b2 * b2,
    )


def nqm_excess_loss(cfg: NQMConfig, s: NQMMoments) -> jax.Array:
    """``E[L(theta)] - noise floor = 1/2 sum_i h_i (E[theta_i]^2 + Var[theta_i])`` (scalar)."""
    return 0.5 * jnp.sum(cfg.curvature * (s.mean * s.mean + s.var))
