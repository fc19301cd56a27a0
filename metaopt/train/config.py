"""The typed, frozen configuration of an outer-training run, and its validation.

Presets (``metaopt/train/presets.py``) are instances of :class:`TrainConfig`; the command line
applies ``key=value`` overrides (:func:`metaopt.config.apply_overrides`) and then
:func:`validate`, which raises :class:`~metaopt.config.ConfigError` naming the key and the
allowed values.
"""

from __future__ import annotations

import dataclasses

from metaopt.config import ConfigError, check_choice, check_positive

ESTIMATORS = ("pes", "tbptt", "truncated_es", "es", "full_backprop")
SCHEDULES = ("constant", "log_uniform")
META_LOSSES = ("train", "valid", "last")
TASKS = ("digits_mlp", "mlp_family", "quadratic")
OUTER_OPTIMIZERS = ("adam", "sgd", "adamw", "rmsprop", "self", "frozen")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One outer-training run. Every field can be overridden as ``key=value``.

    Inner problem: ``task`` (a name in :data:`TASKS`) with ``hidden`` widths and inner
    ``batch_size``; episodes of ``episode_length`` steps (``schedule="log_uniform"``: lengths
    log-uniform in ``[min_episode_length, episode_length]``); ``meta_loss``.
    Learned optimizer: ``lopt`` (a name in the ``metaopt.lopt`` registry).
    Estimator: ``estimator`` over ``num_tasks`` tasks with truncations of ``truncation`` steps
    and perturbation scale ``sigma`` (ES / PES).
    Outer optimizer: ``outer_optimizer`` with ``outer_lr``; ``"self"`` trains theta with the
    learned optimizer it defines (after ``self_warmup_steps`` of Adam); ``"frozen"`` uses the
    learned optimizer saved in ``frozen_from`` (a run directory). ``clip_norm`` clips outer
    gradients (0 disables).
    Run: ``outer_steps``, ``seed``, checkpoints every ``checkpoint_every`` steps (``keep`` kept),
    metrics every ``log_every`` steps, ``devices`` (0: all local devices) for data parallelism.
    On a CPU-only machine the ``metaopt`` command exposes ``devices=N`` CPU devices (``0``: one
    per core), each on its own thread (about 2.4x the one-device throughput on 2 cores).
    """

    task: str = "digits_mlp"
    hidden: tuple[int, ...] = (32,)
    batch_size: int = 128
    episode_length: int = 200
    min_episode_length: int = 20
    schedule: str = "constant"
    meta_loss: str = "train"
    lopt: str = "mlp_small"
    estimator: str = "pes"
    num_tasks: int = 8
    truncation: int = 20
    sigma: float = 0.01
    outer_optimizer: str = "adam"
    outer_lr: float = 3e-3
    clip_norm: float = 1.0
    self_warmup_steps: int = 0
    frozen_from: str = ""
    outer_steps: int = 200
    seed: int = 0
    checkpoint_every: int = 50
    keep: int = 3
    log_every: int = 10
    devices: int = 1


def validate(cfg: TrainConfig, lopt_names: list[str], device_count: int) -> TrainConfig:
    """Check every field; raise ConfigError naming the first bad key."""
    check_choice("task", cfg.task, TASKS)
    check_choice("schedule", cfg.schedule, SCHEDULES)
    check_choice("meta_loss", cfg.meta_loss, META_LOSSES)
    check_choice("estimator", cfg.estimator, ESTIMATORS)
    check_choice("outer_optimizer", cfg.outer_optimizer, OUTER_OPTIMIZERS)
    check_choice("lopt", cfg.lopt, lopt_names)
    for key in ("batch_size", "episode_length", "min_episode_length", "num_tasks", "truncation",
                "outer_steps", "checkpoint_every", "keep", "log_every"):
        check_positive(key, getattr(cfg, key))
    if not cfg.hidden or any(w <= 0 for w in cfg.hidden):
        raise ConfigError("hidden", f"must be positive integer widths, got {cfg.hidden!r}")
    for key in ("sigma", "outer_lr"):
        check_positive(key, getattr(cfg, key), integer=False)
    if cfg.clip_norm < 0:
        raise ConfigError("clip_norm", f"must be >= 0 (0 disables clipping), got {cfg.clip_norm}")
    if cfg.self_warmup_steps < 0:
        raise ConfigError("self_warmup_steps", f"must be >= 0, got {cfg.self_warmup_steps}")
    if cfg.min_episode_length > cfg.episode_length:
        raise ConfigError("min_episode_length", f"must be <= episode_length "
                          f"({cfg.episode_length}), got {cfg.min_episode_length}")
    if cfg.truncation > cfg.episode_length:
        raise ConfigError("truncation", f"must be <= episode_length ({cfg.episode_length}), "
                          f"got {cfg.truncation}; allowed values are 1..{cfg.episode_length}")
    if cfg.outer_optimizer == "frozen":
        from metaopt import pretrained

        if not cfg.frozen_from:
            raise ConfigError("frozen_from", "outer_optimizer=frozen needs frozen_from=RUN_DIR "
                              f"or a pretrained name {pretrained.names()}")
        if not (pretrained.resolve(cfg.frozen_from) / "theta.msgpack").exists():
            raise ConfigError("frozen_from", f"{cfg.frozen_from!r} is neither a run directory "
                              f"with theta.msgpack nor a pretrained name {pretrained.names()}")
    if cfg.devices < 0 or cfg.devices > device_count:
        raise ConfigError("devices", f"must be in 0..{device_count} (0: all {device_count} "
                          f"devices), got {cfg.devices} (on CPU, the metaopt command exposes "
                          f"devices=N CPU devices; in Python call "
                          f"metaopt.distributed.expose_cpu_devices(N) before using JAX)")
    n_dev = cfg.devices or device_count
    if cfg.num_tasks % n_dev:
        allowed = [n for n in range(n_dev, 4 * n_dev + 1, n_dev)]
        raise ConfigError("num_tasks", f"{cfg.num_tasks} is not divisible by the device count "
                          f"{n_dev}; allowed values are multiples of {n_dev}, e.g. {allowed}")
    return cfg
