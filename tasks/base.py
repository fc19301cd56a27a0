"""The task contract: what an inner problem is made of.

A :class:`Task` is a NamedTuple of pure functions (optax style):

* ``init(key) -> params``: a fresh parameter pytree.
* ``loss(params, batch, hparams=None) -> scalar``: the *training* objective. ``hparams`` are
  metaparameters that enter it (a penalty strength, per-example weights...); tasks that take
  none ignore it.
* ``batch(key, split) -> batch``: a pure, jittable sampler from device-resident arrays;
  ``split`` is a static Python string in ``SPLITS``.
* ``metrics(params, batch) -> dict[str, scalar]``: optional extra numbers (accuracy).
* ``valid_loss(params, batch) -> scalar``: optional, the *validation* objective. It does not
  see the metaparameters: by default it is ``loss(params, batch)`` called *without*
  ``hparams`` (so a penalty inside ``loss(..., hparams)`` is not part of the validation
  loss). A task whose validation objective must see them sets ``valid_hparams=True``; it is
  then called as ``valid_loss(params, batch, hparams)`` (or ``loss`` likewise).

A :class:`TaskFamily` is ``sample(key) -> cfg`` (a pytree of arrays only, so that a family
can be vmapped) and ``task(cfg) -> Task`` (the same pytree structures for every ``cfg``).
A fixed task is the family whose config is empty (:func:`single_task_family`).

Any object with these functions is accepted in place of a :class:`Task` / :class:`TaskFamily`
(:func:`as_task`, :func:`as_family`): duck typing, as for optax transforms.
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
    valid_loss: Callable[..., jax.Array] | None = None  # None: loss(params, batch), no hparams
    valid_hparams: bool = False  # the validation objective is called with hparams too


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


def _callable(obj: object, name: str) -> bool:
    return callable(getattr(obj, name, None))


def as_task(task: object) -> Task:
    """A :class:`Task` from itself or from any object with ``init``, ``loss`` and ``batch``
    (and optionally ``metrics``, ``valid_loss``, ``valid_hparams``, ``name``)."""
    if isinstance(task, Task):
        return task
    if not all(_callable(task, f) for f in ("init", "loss", "batch")):
        raise TypeError(f"task: expected a metaopt.tasks.Task or an object with init(key), "
                        f"loss(params, batch[, hparams]) and batch(key, split) functions, got "
                        f"{type(task).__name__}")
    metrics = getattr(task, "metrics", None)
    return Task(init=task.init, loss=task.loss, batch=task.batch,
                metrics=metrics if callable(metrics) else _no_metrics,
                name=str(getattr(task, "name", type(task).__name__)),
                valid_loss=getattr(task, "valid_loss", None),
                valid_hparams=bool(getattr(task, "valid_hparams", False)))


def as_family(task_or_family: object) -> TaskFamily:
    """A :class:`TaskFamily` from a family, a task, or objects with their functions (a
    ``sample`` and ``task`` pair, or a task's ``init``, ``loss`` and ``batch``)."""
    if isinstance(task_or_family, TaskFamily):
        return task_or_family
    if isinstance(task_or_family, Task):
        return single_task_family(task_or_family)
    if _callable(task_or_family, "sample") and _callable(task_or_family, "task"):
        fam = task_or_family
        return TaskFamily(sample=fam.sample, task=lambda cfg: as_task(fam.task(cfg)),
                          name=str(getattr(fam, "name", type(fam).__name__)))
    if all(_callable(task_or_family, f) for f in ("init", "loss", "batch")):
        return single_task_family(as_task(task_or_family))
    raise TypeError(
        f"task: expected a metaopt.tasks.Task or TaskFamily, or an object with their "
        f"functions (init, loss, batch / sample, task), got {type(task_or_family).__name__}"
    )


def check_split(split: str) -> str:
    """Validate a split name; raise ValueError naming the allowed values."""
    if split not in SPLITS:
        raise ValueError(f"split: unknown split {split!r}; allowed values are {list(SPLITS)}")
    return split
