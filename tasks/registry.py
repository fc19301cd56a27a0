"""Tasks and task families by name, for tools, presets and tests.

``make(name, **options)`` builds a :class:`~tasks.base.Task` or :class:`~tasks.base.TaskFamily`;
an unknown name or option raises ValueError naming the field and the allowed values.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tasks.base import Task, TaskFamily
from tasks.digits import cnn_classifier, mlp_classifier
from tasks.quadratic import quadratic_family

REGISTRY: dict[str, Callable[..., Task | TaskFamily]] = {
    "digits_mlp": mlp_classifier,
    "digits_cnn": cnn_classifier,
    "quadratic": quadratic_family,
}


def names() -> list[str]:
    return sorted(REGISTRY)


def make(name: str, **options) -> Task | TaskFamily:
    """Build the registered task ``name`` with keyword ``options``."""
    if name not in REGISTRY:
        raise ValueError(f"task: unknown task {name!r}; allowed values are {names()}")
    fn = REGISTRY[name]
    allowed = [p for p in inspect.signature(fn).parameters if p != "data"]
    for key in options:
        if key not in allowed:
            raise ValueError(f"{name}.{key}: unknown option {key!r}; allowed options are {allowed}")
    return fn(**options)
