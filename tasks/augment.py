"""Task augmentation by random parameter rescaling (Celo, Moudgil et al. 2025, sec. 3; after
Metz et al. 2022, VeLO, "task augmentation").

For a family ``F`` and a range ``[lo, hi]``, each task draws one scale per leaf ``l`` of the
params pytree,

    s_l = exp(v_l),   v_l ~ U(log lo, log hi)   (independently per leaf),

and exposes parameters ``p'`` with ``p = s * p'`` (leafwise):

    init'(key) = init(key) / s,      loss'(p', batch[, hparams]) = loss(s * p', batch[, hparams]),

and ``valid_loss`` and ``metrics`` alike. The augmented task has the same minimisers up to the
rescaling, but an optimizer sees gradients ``grad' = s * grad(s * p')`` and parameters scaled
by ``1/s``: a learned optimizer trained on it must be invariant to per-tensor scale.

The config is :class:`AugmentConfig`: the wrapped family's config and the vector ``log_scales``
(float32 ``[num_leaves]``, in the order of ``jax.tree.leaves(params)``). The number of leaves
is found once, at construction, by :func:`jax.eval_shape` of one task's init (no compile).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, TaskFamily, as_family
from metaopt.tasks.family_common import check_range, log_uniform

PyTree = Any


class AugmentConfig(NamedTuple):
    """One augmented task: the wrapped family's ``cfg`` and per-leaf ``log_scales``."""

    cfg: PyTree
    log_scales: jax.Array  # float32[num_leaves]


def _num_leaves(family: TaskFamily) -> int:
    def params(key):
        return family.task(family.sample(key)).init(key)

    return len(jax.tree.leaves(jax.eval_shape(params, jax.random.key(0))))


def rescaled_task(task: Task, log_scales: jax.Array) -> Task:
    """``task`` in the coordinates ``p' = p / s``, ``s = exp(log_scales)`` per leaf."""

    def scales_like(params):
        leaves, treedef = jax.tree.flatten(params)
        if len(leaves) != log_scales.shape[-1]:
            raise ValueError(f"log_scales: {log_scales.shape[-1]} scales for a params pytree of "
                             f"{len(leaves)} leaves; allowed: one scale per leaf")
        s = jnp.exp(log_scales)
        return jax.tree.unflatten(treedef, [s[i].astype(x.dtype) for i, x in enumerate(leaves)])

    def to_original(p):
        return jax.tree.map(jnp.multiply, scales_like(p), p)

    def init(key):
        p = task.init(key)
        return jax.tree.map(jnp.divide, p, scales_like(p))

    def loss(p, batch, *hparams):
        return task.loss(to_original(p), batch, *hparams)

    def metrics(p, batch):
        return task.metrics(to_original(p), batch)

    valid_loss = None
    if task.valid_loss is not None:
        own = task.valid_loss

        def valid_loss(p, batch, *hparams):
            return own(to_original(p), batch, *hparams)

    return Task(init=init, loss=loss, batch=task.batch, metrics=metrics,
                name=f"{task.name}_aug", valid_loss=valid_loss, valid_hparams=task.valid_hparams)


def augment_scales(family: object, scale_range: tuple[float, float]) -> TaskFamily:
    """``family`` with per-task, per-leaf parameter rescaling; see the module docstring."""
    lo, hi = check_range("augment_scale_range", scale_range, validate.positive_float)
    family = as_family(family)
    n = _num_leaves(family)

    def sample(key):
        k_cfg, k_s = jax.random.split(key)
        u = jax.random.uniform(k_s, (n,))
        return AugmentConfig(family.sample(k_cfg), log_uniform(u, lo, hi))

    def task(cfg: AugmentConfig) -> Task:
        return rescaled_task(family.task(cfg.cfg), cfg.log_scales)

    return TaskFamily(sample=sample, task=task, name=f"{family.name}_aug")


def maybe_augment(family: TaskFamily, scale_range: tuple[float, float] | None) -> TaskFamily:
    """:func:`augment_scales` of ``family``, or ``family`` itself when ``scale_range`` is None."""
    return family if scale_range is None else augment_scales(family, scale_range)
