"""Multinomial logistic regression (a linear softmax classifier) with random feature scales.

For inputs ``x`` flattened to ``[B, D]`` and ``K`` classes, a task is

    logits = (x * s) W + b,   W: [D, K],  b: [K],
    L(W, b) = -1/B sum_i log softmax(logits_i)_{y_i},

with per-feature scales ``s_j = exp(v_j)``, ``v_j ~ U(log lo, log hi)`` drawn per task (the
task's config). The Hessian in ``W`` is ``diag(s) E[x x^T (x) (diag(p) - p p^T)] diag(s)``, so
rescaling feature ``j`` by ``s_j`` multiplies its curvature by ``s_j^2``: a range ``(lo, hi)``
spreads the curvatures over up to ``(hi / lo)^2`` on top of the data's own spectrum, with a
different pattern per task. Convex; at ``W = 0, b = 0`` the loss is exactly ``log K``.
Params init: ``W ~ init_scale * N(0, 1/D)`` (``init_scale=0``: zeros), ``b = 0``.

Each task also draws a label-noise rate and a training subset as ``mlp_family`` does
(:mod:`tasks.family_common`). Batches and metrics come from
:func:`tasks.classification.classification_task`. On digits (``D = 64``, ``K = 10``): 650
parameters. Source: the ``logistic regression`` problems of the learned-optimizer task suites
(e.g. Metz et al. 2022, learned_optimization), with the random rescaling used there to vary
conditioning.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.augment import maybe_augment
from metaopt.tasks.base import Task, TaskFamily
from metaopt.tasks.classification import classification_task
from metaopt.tasks.data.arrays import ArrayDataset
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.family_common import (
    check_probability_range,
    check_range,
    check_subset,
    log_uniform,
    subset_sampler,
)


class LogisticConfig(NamedTuple):
    """One task of :func:`logistic_family`."""

    log_feature_scales: jax.Array  # float32[D], v_j = log s_j
    label_noise: jax.Array  # float32[], probability p that a training label is redrawn
    data_seed: jax.Array  # uint32[], seeds the training subset and the label noise


class ScaledLinear(nn.Module):
    """``flatten(x) * feature_scales -> Dense(out)``; kernel ``init_scale * N(0, 1/D)``."""

    out: int
    feature_scales: jax.Array
    init_scale: float

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1) * self.feature_scales[None, :]
        kinit = nn.initializers.variance_scaling(self.init_scale**2, "fan_in", "normal")
        if self.init_scale == 0:
            kinit = nn.initializers.zeros
        return nn.Dense(self.out, kernel_init=kinit)(h)


def logistic_family(
    data: ArrayDataset | None = None,
    batch_size: int = 128,
    subset_size: int = 512,
    feature_scale_range: tuple[float, float] = (0.1, 10.0),
    label_noise_range: tuple[float, float] = (0.0, 0.3),
    init_scale: float = 0.0,
    augment_scale_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """Linear softmax classifiers on ``data`` with random per-feature scales; see the module
    docstring. ``augment_scale_range``: ``(lo, hi)`` turns on per-task parameter rescaling
    (:func:`tasks.augment.augment_scales`); ``None`` (default) leaves the tasks as they are."""
    data = load_digits() if data is None else data
    n_train = data.size("train")
    check_subset(n_train, subset_size, batch_size)
    f_range = check_range("feature_scale_range", feature_scale_range, validate.positive_float)
    noise_range = check_probability_range("label_noise_range", label_noise_range)
    init_scale = validate.in_range("init_scale", init_scale, 0.0, math.inf)
    dim = math.prod(data.example_shape)
    dev = data.to_device()
    subsets = subset_sampler(n_train, subset_size, data.num_classes)
    name = f"{data.name}_logistic_family"

    def sample(key):
        k_u, k_d = jax.random.split(key)
        u = jax.random.uniform(k_u, (dim + 1,))
        return LogisticConfig(
            log_feature_scales=log_uniform(u[:dim], *f_range),
            label_noise=noise_range[0] + (noise_range[1] - noise_range[0]) * u[dim],
            data_seed=jax.random.bits(k_d, (), jnp.uint32),
        )

    def task(cfg: LogisticConfig) -> Task:
        index_fn, label_fn = subsets(cfg.data_seed, cfg.label_noise)
        model = ScaledLinear(data.num_classes, jnp.exp(cfg.log_feature_scales), init_scale)
        return classification_task(model, dev, batch_size, name, label_fn=label_fn,
                                   index_fn=index_fn)

    return maybe_augment(TaskFamily(sample=sample, task=task, name=name), augment_scale_range)
