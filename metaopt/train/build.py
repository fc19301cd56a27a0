"""From a :class:`RunConfig` to the pure pieces: inner problem(s), learned optimizer,
estimator and outer trainer, everything resolved through the registries; and
:func:`validate`, which checks a config by building it (no JAX computation).

Errors from a constructor (``ValueError("sigma: must be ...")``) come out as
:class:`~metaopt.spec.SpecError` keyed by the dotted config key (``estimator.sigma``).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import jax

from metaopt import estimators, outer_optimizers, tasks
from metaopt import lopt as lopt_lib
from metaopt.inner import InnerProblem, inner_problem, truncation
from metaopt.outer import OuterTrainer, outer_trainer
from metaopt.spec import Registry, Spec, SpecError
from metaopt.train.config import RunConfig

MAX_STEPS = 2**31 - 1  # outer steps are counted in int32


class Built(NamedTuple):
    cfg: RunConfig
    problems: dict[str, InnerProblem]  # per task family (one for a single task)
    lopt: lopt_lib.LearnedOptimizer
    estimator: estimators.Estimator
    trainer: OuterTrainer


@contextlib.contextmanager
def keyed(key: str, registry: Registry | None = None, name: str | None = None):
    """Re-raise a constructor's ValueError / TypeError as SpecError keyed ``key.FIELD`` when
    its message starts with one of the entry's options, else ``key``."""
    try:
        yield
    except SpecError:
        raise
    except (ValueError, TypeError) as err:
        field, sep, rest = str(err).partition(": ")
        options = registry.options(name) if registry is not None and name else {}
        if sep and field in options:
            raise SpecError(f"{key}.{field}", rest) from None
        raise SpecError(key, str(err)) from None


def needs_valid(cfg: RunConfig) -> bool:
    """The inner problem measures validation losses: the estimator weighs them, or the
    learned optimizer is given them."""
    return cfg.meta_loss not in ("train", "log_train") or cfg.inner.feed_valid_loss


def make_estimator(spec: Spec, problem: InnerProblem, num_tasks: int,
                   axis_name: str | None, key: str = "estimator") -> estimators.Estimator:
    """The estimator ``spec`` on ``problem`` for ``num_tasks`` local tasks."""
    with keyed(key, estimators.REGISTRY, spec.name):
        return estimators.REGISTRY.make(spec, problem, num_tasks=num_tasks, axis_name=axis_name)


def _is_mixture(cfg: RunConfig) -> bool:
    return not isinstance(cfg.task, Spec)


def build(cfg: RunConfig, num_tasks: int | None = None, axis_name: str | None = None) -> Built:
    """Build everything a run needs.

    For data parallelism, ``num_tasks`` is the per-device task count (of every family) and
    ``axis_name`` the mesh axis the estimator and outer step average over.
    """
    if not isinstance(cfg, RunConfig):
        raise TypeError(f"cfg: expected a metaopt.train.config.RunConfig, got "
                        f"{type(cfg).__name__}")
    with keyed("lopt", lopt_lib.REGISTRY, cfg.lopt.name):
        lopt = lopt_lib.REGISTRY.make(cfg.lopt)
    with keyed("schedule", truncation.REGISTRY, cfg.schedule.name):
        schedule = truncation.REGISTRY.make(cfg.schedule)
    n = num_tasks or cfg.estimator.options.get("num_tasks", 1)
    problems, members = {}, []
    for member, weight, spec in cfg.members():
        key = f"task.{member}" if _is_mixture(cfg) else "task"
        with keyed(key, tasks.REGISTRY, spec.name):
            task = tasks.REGISTRY.make(spec)
        problems[member] = inner_problem(task, lambda theta: lopt.optimizer(theta),
                                         schedule=schedule, valid=needs_valid(cfg),
                                         feed_valid_loss=cfg.inner.feed_valid_loss)
        members.append((member, weight, make_estimator(cfg.estimator, problems[member], n,
                                                       axis_name)))
    est = estimators.mixture(members) if _is_mixture(cfg) else members[0][2]
    with keyed("outer", outer_optimizers.REGISTRY, cfg.outer.name):
        outer = outer_optimizers.REGISTRY.make(cfg.outer, lopt)
    with keyed("run.clip_norm"):
        trainer = outer_trainer(est, outer, clip_norm=cfg.run.clip_norm or None,
                                axis_name=axis_name)
    return Built(cfg, problems, lopt, est, trainer)


def validate(cfg: RunConfig, device_count: int | None = None) -> RunConfig:
    """Check every value of ``cfg`` (SpecError naming the dotted key and what is allowed):
    the run settings, the devices, and every piece by building it."""
    r = cfg.run
    for key in ("outer_steps", "checkpoint_every", "keep", "log_every"):
        if not 1 <= getattr(r, key) <= MAX_STEPS:  # the step counter is an int32
            raise SpecError(f"run.{key}", f"must be a positive integer <= {MAX_STEPS}, got "
                            f"{getattr(r, key)}")
    if not -2**63 <= r.seed < 2**63:
        raise SpecError("run.seed", f"must be a 64-bit signed integer (-2**63 .. 2**63-1), "
                        f"got {r.seed}")
    if not 0 <= r.max_skipped <= MAX_STEPS:
        raise SpecError("run.max_skipped", f"must be an integer in 0..{MAX_STEPS} (0: never "
                        f"stop for skipped steps), got {r.max_skipped}")
    if r.clip_norm < 0:
        raise SpecError("run.clip_norm", f"must be >= 0 (0 disables clipping), got {r.clip_norm}")
    count = jax.device_count() if device_count is None else device_count
    if not 0 <= r.devices <= count:
        raise SpecError("run.devices", f"must be in 0..{count} (0: all {count} devices), got "
                        f"{r.devices} (on CPU, the metaopt command exposes run.devices=N CPU "
                        f"devices; in Python call metaopt.distributed.expose_cpu_devices(N) "
                        f"before using JAX)")
    n_dev = r.devices or count
    num_tasks = cfg.estimator.options.get("num_tasks", 1)
    if num_tasks % n_dev:
        allowed = list(range(n_dev, 4 * n_dev + 1, n_dev))
        raise SpecError("estimator.num_tasks", f"{num_tasks} is not divisible by the device "
                        f"count {n_dev}; allowed values are multiples of {n_dev}, e.g. {allowed}")
    with keyed("schedule", truncation.REGISTRY, cfg.schedule.name):
        longest = cfg.budget
    unroll = cfg.estimator.options.get("unroll_length")
    if isinstance(unroll, int) and unroll > longest:
        raise SpecError("estimator.unroll_length", f"must be <= the longest episode of the "
                        f"schedule ({longest}), got {unroll}; allowed values are 1..{longest}")
    build(cfg)
    return cfg
