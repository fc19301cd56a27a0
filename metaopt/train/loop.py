"""The one impure driver: outer steps, metrics, checkpoints, progress bar, signals.

``train(cfg, run_dir)`` runs ``cfg.outer_steps`` jitted, pure outer steps. The key of outer
step ``k`` is ``fold_in(key(seed), k + 1)``, a function of the step alone, so a run resumed
from a checkpoint of step ``k`` (which holds theta, the outer optimizer state, the estimator
state with PES accumulators and inner states, and the step counter) continues bit-for-bit.
Metrics are fetched from the device only every ``log_every`` steps, so the host never waits
on the device inside that window. SIGINT / SIGTERM, or an exception, write a checkpoint of
the last completed step before the process exits.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import sys
import time

import jax
import numpy as np
from tqdm import tqdm

from metaopt import distributed
from metaopt.config import ConfigError, to_dict
from metaopt.io.checkpoint import Checkpointer
from metaopt.io.metrics import MetricsWriter, truncate_after
from metaopt.io.signals import graceful_stop
from metaopt.train import artifacts
from metaopt.train.build import build
from metaopt.train.config import TrainConfig


def step_key(seed: int, step: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), step + 1)


def _check_compatible(run_dir: pathlib.Path, cfg: TrainConfig) -> None:
    old = artifacts.read_config(run_dir)
    diff = [k for k, v in to_dict(cfg).items() if k != "outer_steps" and to_dict(old)[k] != v]
    if diff:
        raise ConfigError("run_dir", f"{run_dir} holds a run with a different config (keys "
                          f"{diff} differ); resume it with --resume {run_dir} or choose "
                          f"another --run-dir")


def train(cfg: TrainConfig, run_dir: str | pathlib.Path, *, resume: bool = False,
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Run (or resume) outer training into ``run_dir``; returns a summary dict.

    ``stop_at`` ends the run early after that outer step (as an interruption would), keeping
    ``cfg.outer_steps`` as the run's target.
    """
    run_dir = pathlib.Path(run_dir)
    if (run_dir / artifacts.CONFIG).exists():
        if not resume:
            _check_compatible(run_dir, cfg)
            if Checkpointer(run_dir / artifacts.CHECKPOINTS).steps():
                raise ConfigError("run_dir", f"{run_dir} already holds checkpoints; resume it "
                                  f"with --resume {run_dir} or choose another --run-dir")
        else:
            _check_compatible(run_dir, cfg)
    if jax.process_index() == 0:
        artifacts.write_config(run_dir, cfg)
    progress = progress and jax.process_index() == 0
    if progress:
        print(f"run directory: {run_dir}", file=sys.stderr)
    built = build(cfg)
    state = built.trainer.init(jax.random.fold_in(jax.random.key(cfg.seed), 1), built.theta0)
    n_dev = cfg.devices or jax.device_count()
    if n_dev > 1:  # data parallel: the same outer updates as one device (module distributed)
        local = build(cfg, num_tasks=cfg.num_tasks // n_dev, axis_name=distributed.AXIS)
        step_fn, state = distributed.data_parallel(local.trainer.step, state, n_dev)
    else:
        step_fn = jax.jit(built.trainer.step)
    ckpt = Checkpointer(run_dir / artifacts.CHECKPOINTS, keep=cfg.keep)
    start = 0
    if resume:
        restored = ckpt.restore_latest(state)
        for step, why in getattr(ckpt, "skipped", []):
            print(f"warning: checkpoint {step} is unreadable ({why}); using an earlier one",
                  file=sys.stderr)
        if restored is not None:
            start, state = restored
    primary = jax.process_index() == 0  # the one process that writes files besides orbax
    if primary:
        truncate_after(run_dir / artifacts.METRICS, start)
    metrics_file = MetricsWriter(run_dir / artifacts.METRICS if primary else os.devnull)
    task_steps = cfg.num_tasks * cfg.truncation
    end = cfg.outer_steps if stop_at is None else min(stop_at, cfg.outer_steps)
    step, last = start, {}
    saved_step = start
    bar = tqdm(total=cfg.outer_steps, initial=start, disable=not progress, file=sys.stderr,
               unit="step", dynamic_ncols=True)
    t_log, s_log = time.perf_counter(), start
    reason = "finished"
    with graceful_stop() as stop:
        try:
            while step < end:
                state, metrics = step_fn(step_key(cfg.seed, step), state)
                step += 1
                if step == start + 1:  # exclude compilation from the throughput figures
                    jax.block_until_ready(metrics)
                    t_log, s_log = time.perf_counter(), step
                if step % cfg.log_every == 0 or step == end:
                    host = {k: float(v) for k, v in distributed.to_host(metrics).items()}
                    now = time.perf_counter()
                    if step > s_log:
                        host["task_steps_per_s"] = task_steps * (step - s_log) / (now - t_log)
                    t_log, s_log = now, step
                    if primary:
                        metrics_file.write(step, host)
                    bar.set_postfix(meta_loss=f"{host['meta_loss']:.4f}",
                                    tps=f"{host.get('task_steps_per_s', 0.0):,.0f}")
                    last = host
                bar.update(1)
                if step % cfg.checkpoint_every == 0 or step == end:
                    ckpt.save(step, state)
                    artifacts.save_theta(run_dir, state.theta)
                    saved_step = step
                if stop:
                    reason = f"stopped by signal {stop.signum}"
                    break
        except BaseException:
            reason = "crashed"
            raise
        finally:
            if step != saved_step:
                ckpt.save(step, state)
                artifacts.save_theta(run_dir, state.theta)
            bar.close()
            metrics_file.close()
            ckpt.close()
            if reason != "finished":
                print(f"{reason}: checkpoint of outer step {step} saved in {run_dir}; continue "
                      f"with: metaopt train --resume {run_dir}", file=sys.stderr)
    return {"step": step, "reason": reason, "last_metrics": last,
            "theta_finite": bool(all(np.isfinite(x).all()
                                     for x in jax.tree.leaves(distributed.to_host(state.theta)))),
            "config": dataclasses.asdict(cfg)}
