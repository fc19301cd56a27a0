"""Black-box baselines for the RNN optimizer: random search and GP expected improvement.

Both take the same first query ``x_1`` as the RNN (:mod:`.rollout`) and return the values
``ys [T]`` of their ``T`` queries on ``[0, 1]^d``.

* :func:`random_search`: ``x_2..x_T ~ U([0, 1]^d)`` i.i.d. (pure JAX, vmaps over seeds).
* :func:`gp_ei`: Bayesian optimization with a GP surrogate and expected improvement (Mockus
  1978; Jones et al. 1998), the role Spearmint plays in Chen et al. (2017). Per query ``t >= 2``:
  fit scikit-learn's ``GaussianProcessRegressor`` to ``(x_i, y_i)_{i<t}`` (kernel
  ``C * Matern52`` with one length scale per input (ARD), a small nugget, ``normalize_y``;
  hyperparameters by maximum marginal likelihood, L-BFGS from l = 0.3 plus ``restarts`` random
  restarts, default none), then query
  the candidate maximising

      EI(x) = (y* - mu(x)) Phi(z) + s(x) phi(z),   z = (y* - mu(x)) / s(x),   y* = min_i y_i,

  over ``num_candidates`` uniform points plus ``num_local`` Gaussian perturbations
  (std ``local_scale``) of the incumbent, clipped to the box. (Not a continuous optimizer of EI:
  cheap and adequate for ``d <= 6`` and tens of queries.) Host code (NumPy), not jittable.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats


def random_search(key: jax.Array, fn: Callable[[jax.Array], jax.Array], x1: jax.Array,
                  horizon: int) -> jax.Array:
    """``ys [T]`` of ``x_1`` followed by ``T - 1`` uniform queries."""
    xs = jax.random.uniform(key, (horizon - 1, x1.shape[-1]), x1.dtype)
    return jax.vmap(fn)(jnp.concatenate([x1[None], xs]))


def expected_improvement(mu: np.ndarray, sd: np.ndarray, best: float) -> np.ndarray:
    """EI of a minimisation at predictive ``mu``, ``sd`` (``[n]``) against incumbent ``best``."""
    sd = np.maximum(sd, 1e-12)
    z = (best - mu) / sd
    return (best - mu) * stats.norm.cdf(z) + sd * stats.norm.pdf(z)


def gp_ei(fn: Callable[[np.ndarray], float], x1: np.ndarray, horizon: int,
          rng: np.random.Generator, *, num_candidates: int = 2048, num_local: int = 512,
          local_scale: float = 0.05, restarts: int = 0) -> np.ndarray:
    """``ys [T]`` of GP-EI (module docstring) on ``fn`` from ``x1``."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern

    x1 = np.asarray(x1, np.float64)
    d = x1.shape[-1]
    xs, ys = [x1], [float(fn(x1))]
    for _ in range(horizon - 1):
        kernel = (ConstantKernel(1.0, (1e-3, 1e3))
                  * Matern(np.full(d, 0.3), (1e-2, 1e1), nu=2.5))
        gp = GaussianProcessRegressor(kernel, alpha=1e-6, normalize_y=True,
                                      n_restarts_optimizer=restarts,
                                      random_state=int(rng.integers(2**31)))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(np.stack(xs), np.asarray(ys))
        best = int(np.argmin(ys))
        local = xs[best] + local_scale * rng.standard_normal((num_local, d))
        cand = np.concatenate([rng.uniform(size=(num_candidates, d)), np.clip(local, 0, 1)])
        mu, sd = gp.predict(cand, return_std=True)
        x = cand[int(np.argmax(expected_improvement(mu, sd, ys[best])))]
        xs.append(x)
        ys.append(float(fn(x)))
    return np.asarray(ys)
