"""The one impure driver: outer steps, metrics, checkpoints, progress bar, signals.

``train(cfg, run_dir)`` validates ``cfg`` and runs ``cfg.run.outer_steps`` jitted, pure outer
steps. Random streams (:func:`run_keys`): the seed's key is split in three disjoint streams,

    k_theta, k_init, k_steps = split(key(seed), 3)
    theta_0 = lopt.init(k_theta);  state_0 = trainer.init(k_init, theta_0);
    key of outer step k = fold_in(k_steps, k),

so no step draws from the key of the task inits (before 0.2 the init key was also step 0's
key; runs made then cannot be resumed, :mod:`metaopt.train.artifacts`). A key is a function
of the step alone, so a run resumed from a checkpoint of step ``k`` (theta, the outer
optimizer state, the estimator state with PES accumulators and inner states, the step
counter) continues bit-for-bit.

The jitted step *donates* its input state (XLA reuses its buffers for the output: PES keeps
one copy of both inner-state halves instead of two). Checkpoints are written between steps,
from the last completed state. Metrics are fetched from the device only every
``log_every`` steps; ``inner_steps_per_s`` is every inner update of every task per second
(the estimators' ``inner_steps`` metric, summed over devices and mixture members: an
antithetic pair counts twice, ES and full backprop count whole episodes). SIGINT / SIGTERM,
or an exception, write a checkpoint of the last completed step before the process exits; if
that state was already donated to the step that failed, the run keeps its last periodic
checkpoint and says so.
"""

from __future__ import annotations

import os
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from metaopt import distributed
from metaopt.io.checkpoint import Checkpointer
from metaopt.io.metrics import MetricsWriter, truncate_after
from metaopt.io.signals import graceful_stop
from metaopt.spec import SpecError
from metaopt.train import artifacts
from metaopt.train.build import build, validate
from metaopt.train.config import RunConfig, diff


class RunKeys(NamedTuple):
    """The run's three disjoint random streams (module docstring)."""

    theta: jax.Array  # lopt.init
    init: jax.Array  # trainer.init: task draws, inner inits, estimator state
    steps: jax.Array  # outer step k: fold_in(steps, k)


def run_keys(seed: int) -> RunKeys:
    return RunKeys(*jax.random.split(jax.random.key(seed), 3))


def step_key(keys: RunKeys, step: int) -> jax.Array:
    return jax.random.fold_in(keys.steps, step)


def _sync(name: str) -> None:
    """A barrier over all processes of a multi-process run (a no-op with one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _check_run_dir(run_dir: pathlib.Path, cfg: RunConfig, resume: bool) -> None:
    """Refuse a run directory holding another run, or checkpoints without ``resume``.

    Every process looks before any writes (then a barrier), so all take the same path: a
    process that saw the config process 0 had just written would otherwise open an orbax
    manager -- a collective -- that the others never join (a deadlock seen under load).
    """
    exists = (run_dir / artifacts.CONFIG).exists()
    _sync("metaopt.train: run directory checked")
    if not exists:
        return
    changed = diff(artifacts.read_config(run_dir), cfg, ignore=("run.outer_steps",))
    if changed:
        raise SpecError("run_dir", f"{run_dir} holds a run with a different config (keys "
                        f"{changed} differ); resume it with --resume {run_dir} or choose "
                        f"another --run-dir")
    ckpts = run_dir / artifacts.CHECKPOINTS
    if not resume and ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir()):
        raise SpecError("run_dir", f"{run_dir} already holds checkpoints; resume it with "
                        f"--resume {run_dir} or choose another --run-dir")


def compile_step(cfg: RunConfig, built, state):
    """``(jitted step donating its state, state placed for it)``: one device, or the task
    batch split over ``cfg.run.devices`` devices (:mod:`metaopt.distributed`)."""
    n_dev = cfg.run.devices or jax.device_count()
    if n_dev == 1:
        return jax.jit(built.trainer.step, donate_argnums=1), state
    num_tasks = cfg.estimator.options.get("num_tasks", 1) // n_dev
    local = build(cfg, num_tasks=num_tasks, axis_name=distributed.AXIS)
    return distributed.data_parallel(local.trainer.step, state, n_dev, donate=True)


def _intact(state) -> bool:
    return not any(x.is_deleted() for x in jax.tree.leaves(state) if isinstance(x, jax.Array))


def train(cfg: RunConfig, run_dir: str | pathlib.Path, *, resume: bool = False,
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Run (or resume) outer training into ``run_dir``; returns a summary dict.

    Raises SpecError for a bad config or an incompatible run directory. ``stop_at`` ends the
    run early after that outer step (as an interruption would), keeping ``outer_steps`` as
    the run's target.
    """
    validate(cfg)
    run_dir = pathlib.Path(run_dir)
    _check_run_dir(run_dir, cfg, resume)
    if jax.process_index() == 0:
        artifacts.write_config(run_dir, cfg)
    progress = progress and jax.process_index() == 0
    if progress:
        print(f"run directory: {run_dir}", file=sys.stderr)
    keys = run_keys(cfg.run.seed)
    built = build(cfg)
    state = jax.jit(built.trainer.init)(keys.init, built.lopt.init(keys.theta))
    step_fn, state = compile_step(cfg, built, state)
    ckpt = Checkpointer(run_dir / artifacts.CHECKPOINTS, keep=cfg.run.keep)
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
    r = cfg.run
    end = r.outer_steps if stop_at is None else min(stop_at, r.outer_steps)
    step, saved_step, last = start, start, {}
    bar = tqdm(total=r.outer_steps, initial=start, disable=not progress, file=sys.stderr,
               unit="step", dynamic_ncols=True)
    t_log, s_log = time.perf_counter(), start
    reason = "finished"
    with graceful_stop() as stop:
        try:
            while step < end:
                state, metrics = step_fn(step_key(keys, step), state)
                step += 1
                if step == start + 1:  # exclude compilation from the throughput figures
                    jax.block_until_ready(metrics)
                    t_log, s_log = time.perf_counter(), step
                if step % r.log_every == 0 or step == end:
                    host = {k: float(v) for k, v in distributed.to_host(metrics).items()}
                    now = time.perf_counter()
                    if step > s_log:  # inner_steps is a static count per outer step
                        host["inner_steps_per_s"] = (host["inner_steps"] * (step - s_log)
                                                     / (now - t_log))
                    t_log, s_log = now, step
                    if primary:
                        metrics_file.write(step, host)
                    bar.set_postfix_str(f"meta_loss={host['meta_loss']:.4f}, "
                                        f"{host.get('inner_steps_per_s', 0.0):,.0f} inner steps/s")
                    last = host
                bar.update(1)
                if step % r.checkpoint_every == 0 or step == end:
                    ckpt.save(step, state)
                    artifacts.save_optimizer(run_dir, cfg, state.theta, step)
                    saved_step = step
                if stop:
                    reason = f"stopped by signal {stop.signum}"
                    break
        except BaseException:
            reason = "crashed"
            raise
        finally:
            lost = ""
            if step != saved_step:
                try:
                    if not _intact(state):
                        raise RuntimeError("it was donated to the step that failed")
                    ckpt.save(step, state)
                    artifacts.save_optimizer(run_dir, cfg, state.theta, step)
                    saved_step = step
                except Exception as err:  # the failed step's error propagates  # noqa: BLE001
                    why = (str(err).splitlines() or [type(err).__name__])[0][:200]
                    lost = f"the state of outer step {step} is lost ({why}); "
            bar.close()
            metrics_file.close()
            ckpt.close()
            if reason != "finished":
                where = (f"checkpoint of outer step {saved_step} saved in {run_dir}"
                         if saved_step else f"no checkpoint in {run_dir} (a resume starts over)")
                print(f"{reason}: {lost}{where}; continue with: metaopt train --resume "
                      f"{run_dir}", file=sys.stderr)
    return {"step": step, "reason": reason, "last_metrics": last,
            "theta_finite": bool(all(np.isfinite(x).all()
                                     for x in jax.tree.leaves(distributed.to_host(state.theta)))),
            "config": cfg.to_json()}
