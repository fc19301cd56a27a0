"""Tasks and task families by name, for tools, presets and tests.

``make(name, **options)`` builds a :class:`~tasks.base.Task` or :class:`~tasks.base.TaskFamily`;
an unknown name or option raises ValueError naming the field and the allowed values.
Entries on a data set take it by name: ``dataset`` (one of ``tasks.data.DATASETS``, default
``"digits"``) and ``data_dir`` (for tfds sets), e.g.
``make("mlp_classifier", dataset="digits", hidden=(32,), batch_size=128)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from tasks.base import Task, TaskFamily
from tasks.data.registry import load_dataset
from tasks.digits import cnn_classifier, mlp_classifier
from tasks.mlp_family import mlp_family
from tasks.nqm import nqm
from tasks.quadratic import quadratic_family
from tasks.teacher_student import teacher_student_family


def with_dataset(fn: Callable[..., Task | TaskFamily]) -> Callable[..., Task | TaskFamily]:
    """``fn(data=..., **options)`` as an entry taking ``dataset`` (a name) and ``data_dir``.

    The entry's signature is ``fn``'s, keyword-only, with ``data`` replaced by those two, so
    :func:`make` checks options against it; the data set is loaded by
    :func:`tasks.data.load_dataset` (ValueError naming ``dataset`` for an unknown name).
    """
    kw = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("dataset", kw, default="digits"),
              inspect.Parameter("data_dir", kw, default=None)]
    own = inspect.signature(fn).parameters
    params += [p.replace(kind=kw) for n, p in own.items() if n != "data"]

    def entry(*, dataset: str = "digits", data_dir: str | None = None, **options):
        return fn(data=load_dataset(dataset, data_dir), **options)

    entry.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    entry.__doc__ = fn.__doc__
    entry.__name__ = fn.__name__
    return entry


REGISTRY: dict[str, Callable[..., Task | TaskFamily]] = {
    "digits_mlp": mlp_classifier,
    "digits_cnn": cnn_classifier,
    "mlp_classifier": with_dataset(mlp_classifier),
    "cnn_classifier": with_dataset(cnn_classifier),
    "mlp_family": with_dataset(mlp_family),
    "nqm": nqm,
    "quadratic": quadratic_family,
    "teacher_student": teacher_student_family,
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
