"""The task contract: what an inner problem is made of.

A :class:`Task` is a NamedTuple of pure functions (optax style):

* ``init(key) -> params``: a fresh parameter pytree.
* ``loss(params, batch, hparams=None) -> scalar``: the training objective. ``hparams`` are
  metaparameters that enter the loss (per-example weights, a meta-learned backbone...);
  tasks that take none ignore it.
* ``batch(key, split) -> batch``: a pure, jittable sampler from device-resident arrays;
  ``split`` is a static Python string in ``SPLITS``.
* ``metrics(params, batch) -> dict[str, scalar]``: optional extra numbers (accuracy).

A :class:`TaskFamily` is ``sample(key) -> cfg`` (a pytree of arrays only, so that a family
can be vmapped) and ``task(cfg) -> Task`` (the same pytree structures for every ``cfg``).
A fixed task is the family whose config is empty (:func:`single_task_family`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

PyTree = Any
SPLITS = ("train", "valid", "test")


def _no_metrics(params: PyTree, batch: PyTree) -> dict[str, jax.Array]:
    del params, batch
    return {}


class Task(NamedTuple):
    """One inner problem. All members are pure functions; see the module docstring."""

    init: Callable[[jax.Array], PyTree]
    loss: Callable[..., jax.Array]
    batch: Callable[[jax.Array, str], PyTree]
    metrics: Callable[[PyTree, PyTree], dict[str, jax.Array]] = _no_metrics
    name: str = "task"


class TaskFamily(NamedTuple):
    """A distribution over tasks: ``sample(key) -> cfg`` and ``task(cfg) -> Task``."""

    sample: Callable[[jax.Array], PyTree]
    task: Callable[[PyTree], Task]
    name: str = "family"


def single_task_family(task: Task) -> TaskFamily:
    """The family holding one fixed task; its config is a dummy scalar."""
    return TaskFamily(
        sample=lambda key: jnp.zeros((), jnp.float32),
        task=lambda cfg: task,
        name=task.name,
    )


def as_family(task_or_family: Task | TaskFamily) -> TaskFamily:
    """Accept either a :class:`Task` or a :class:`TaskFamily`."""
    if isinstance(task_or_family, TaskFamily):
        return task_or_family
    if isinstance(task_or_family, Task):
        return single_task_family(task_or_family)
    raise TypeError(
        f"expected a tasks.Task or tasks.TaskFamily, got {type(task_or_family).__name__}"
    )


def check_split(split: str) -> str:
    """Validate a split name; raise ValueError naming the allowed values."""
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; allowed values are {list(SPLITS)}")
    return split
