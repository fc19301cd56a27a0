"""Tasks and task families by name: the one task registry (:class:`metaopt.spec.Registry`).

``make(name, **options)`` builds a :class:`~metaopt.tasks.base.Task` or
:class:`~metaopt.tasks.base.TaskFamily`; an unknown name or option raises ValueError naming
the field and the allowed values. Run configs name tasks as specs of :data:`REGISTRY`.
Entries on a data set take it by name: ``dataset`` (one of ``tasks.data.DATASETS``, default
``"digits"``) and ``data_dir`` (for tfds sets), e.g.
``make("mlp_classifier", dataset="digits", hidden=(32,), batch_size=128)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from metaopt.spec import Registry
from metaopt.tasks.autoencoder_family import autoencoder_family
from metaopt.tasks.base import Task, TaskFamily
from metaopt.tasks.cnn_family import cnn_family
from metaopt.tasks.data.registry import load_dataset
from metaopt.tasks.digits import cnn_classifier, mlp_classifier
from metaopt.tasks.gp_functions import gp_functions
from metaopt.tasks.least_squares import least_squares_family
from metaopt.tasks.logistic_family import logistic_family
from metaopt.tasks.mlp_family import mlp_family
from metaopt.tasks.nqm import nqm
from metaopt.tasks.quadratic import quadratic_family
from metaopt.tasks.sequence_family import sequence_family
from metaopt.tasks.sklearn_data import mlp_regressor
from metaopt.tasks.teacher_student import teacher_student_family
from metaopt.tasks.testfns import test_function


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


def _no_data(fn: Callable[..., Task | TaskFamily]) -> Callable[..., Task | TaskFamily]:
    """``fn`` on the bundled digits: its ``data`` argument is not an option."""
    own = inspect.signature(fn).parameters
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own.items()
              if n != "data"]

    def entry(**options):
        return fn(**options)

    entry.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    entry.__doc__ = fn.__doc__
    entry.__name__ = fn.__name__
    return entry


REGISTRY = Registry("task")
for _name, _fn in {
    "autoencoder_family": with_dataset(autoencoder_family),
    "cnn_classifier": with_dataset(cnn_classifier),
    "cnn_family": with_dataset(cnn_family),
    "digits_cnn": _no_data(cnn_classifier),
    "digits_mlp": _no_data(mlp_classifier),
    "logistic_family": with_dataset(logistic_family),
    "mlp_classifier": with_dataset(mlp_classifier),
    "mlp_family": with_dataset(mlp_family),
    "nqm": nqm,
    "quadratic": quadratic_family,
    "sequence_family": sequence_family,
    "teacher_student": teacher_student_family,
    "mlp_regressor": mlp_regressor,  # dataset="sk_regression" (sklearn_data.py)
    "test_function": test_function,  # rosenbrock ... branin, hartmann3/6 (testfns.py)
    "gp_functions": gp_functions,  # GP-prior samples on [0, 1]^d (gp_functions.py)
    "least_squares": least_squares_family,  # ||W theta - y||^2 (Andrychowicz et al. 2016)
}.items():
    REGISTRY.register(_name, _fn)


def names() -> list[str]:
    """Registered task names, sorted."""
    return sorted(REGISTRY.names())


def make(name: str, **options) -> Task | TaskFamily:
    """Build the registered task ``name`` with keyword ``options``."""
    return REGISTRY.make(name, **options)
