"""From a :class:`TrainConfig` to the pure pieces: inner problem, learned optimizer,
estimator and outer trainer. No disk or clock here except reading a frozen optimizer."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import optax

from metaopt import estimators, tasks
from metaopt import lopt as lopt_lib
from metaopt.inner import InnerProblem, inner_problem, truncation
from metaopt.outer import OuterTrainer, outer_trainer
from metaopt.train.config import TrainConfig
from metaopt.train.outer_opt import frozen_optimizer, self_optimizer


class Built(NamedTuple):
    cfg: TrainConfig
    problem: InnerProblem
    lopt: lopt_lib.LearnedOptimizer
    estimator: estimators.Estimator
    trainer: OuterTrainer
    theta0: Any


def make_task(cfg: TrainConfig):
    if cfg.task == "digits_mlp":
        return tasks.mlp_classifier(hidden=cfg.hidden, batch_size=cfg.batch_size)
    if cfg.task == "mlp_family":
        return tasks.make("mlp_family", hidden=cfg.hidden, batch_size=cfg.batch_size)
    return tasks.quadratic_family(dim=10)


def make_schedule(cfg: TrainConfig) -> truncation.TruncationSchedule:
    if cfg.schedule == "log_uniform":
        return truncation.log_uniform(cfg.min_episode_length, cfg.episode_length)
    return truncation.constant(cfg.episode_length)


def make_estimator(cfg: TrainConfig, problem: InnerProblem, num_tasks: int,
                   axis_name: str | None = None):
    kwargs: dict[str, Any] = {"num_tasks": num_tasks, "meta_loss": cfg.meta_loss}
    if axis_name is not None:
        kwargs["axis_name"] = axis_name
    if cfg.estimator in ("pes", "truncated_es", "es"):
        kwargs["sigma"] = cfg.sigma
    if cfg.estimator in ("pes", "truncated_es", "tbptt"):
        kwargs["unroll_length"] = cfg.truncation
    return estimators.make(cfg.estimator, problem, **kwargs)


def make_outer_optimizer(cfg: TrainConfig, lopt) -> optax.GradientTransformation:
    if cfg.outer_optimizer == "self":
        return self_optimizer(lopt, warmup_steps=cfg.self_warmup_steps,
                              warmup=optax.adam(cfg.outer_lr))
    if cfg.outer_optimizer == "frozen":
        return frozen_optimizer(cfg.frozen_from)
    return getattr(optax, cfg.outer_optimizer)(cfg.outer_lr)


def build(cfg: TrainConfig, num_tasks: int | None = None, axis_name: str | None = None) -> Built:
    """Build everything a run needs.

    For data parallelism, ``num_tasks`` is the per-device task count and ``axis_name`` the
    mesh axis the estimator and outer step average over.
    """
    lopt = lopt_lib.make(cfg.lopt)
    valid = cfg.meta_loss in ("valid", "last")
    problem = inner_problem(make_task(cfg), lambda theta: lopt.optimizer(theta),
                            schedule=make_schedule(cfg), valid=valid, feed_valid_loss=valid)
    est = make_estimator(cfg, problem, num_tasks or cfg.num_tasks, axis_name)
    trainer = outer_trainer(est, make_outer_optimizer(cfg, lopt),
                            clip_norm=cfg.clip_norm or None, axis_name=axis_name)
    theta0 = lopt.init(jax.random.fold_in(jax.random.key(cfg.seed), 0))
    return Built(cfg, problem, lopt, est, trainer, theta0)
