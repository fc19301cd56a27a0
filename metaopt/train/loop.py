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

import errno
import os
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from metaopt import distributed
from metaopt.io.checkpoint import Checkpointer, CheckpointError
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


class TrainingError(RuntimeError):
    """The run stopped for a reason other than bad input (theta became non-finite, the disk
    filled up); the message is one line, with how to continue."""


def _is_disk_full(err: BaseException | None) -> bool:
    while err is not None:
        if getattr(err, "errno", None) == errno.ENOSPC or "no space left" in str(err).lower():
            return True
        err = err.__cause__ or err.__context__
    return False


def _checkpoint_bytes(run_dir: pathlib.Path, state) -> int:
    """About what one more checkpoint needs on disk: the newest one's size, else the state's."""
    ckpts = run_dir / artifacts.CHECKPOINTS
    steps = sorted((p for p in ckpts.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)) \
        if ckpts.is_dir() else []
    if steps:
        return sum(f.stat().st_size for f in steps[-1].rglob("*") if f.is_file())
    return sum(x.nbytes for x in jax.tree.leaves(state) if hasattr(x, "nbytes"))


_all_finite = jax.jit(lambda tree: jax.numpy.all(jax.numpy.stack(
    [jax.numpy.isfinite(x).all() for x in jax.tree.leaves(tree)])))


class SkipStreak:
    """Stops a run that has stopped learning: :class:`TrainingError` once ``limit`` (> 0)
    consecutive logged outer steps had no usable outer gradient, either skipped as non-finite
    (``skipped``) or exactly zero because every task's contribution was masked as non-finite
    (``grad_norm == 0`` with ``masked_tasks > 0``; a far too large ``estimator.sigma`` does
    this). Only logged steps are seen (one per ``run.log_every``)."""

    def __init__(self, limit: int, log_every: int):
        self.limit, self.log_every, self.count = limit, log_every, 0

    def update(self, step: int, host: dict, saved_step: int, run_dir) -> None:
        unusable = host.get("skipped", 0.0) > 0 or (
            host.get("grad_norm") == 0.0 and host.get("masked_tasks", 0.0) > 0)
        self.count = self.count + 1 if unusable else 0
        if 0 < self.limit <= self.count:
            first = step - (self.count - 1) * self.log_every
            raise TrainingError(
                f"no usable outer gradient at any logged outer step from {first} to {step} "
                f"(non-finite, or every task masked as non-finite; run.max_skipped="
                f"{self.limit}): estimator.sigma or the inner step size is likely far too "
                f"large; the last checkpoint is outer step {saved_step} in {run_dir}")


def train(cfg: RunConfig, run_dir: str | pathlib.Path, *, resume: bool = False,
          progress: bool = True, stop_at: int | None = None) -> dict:
    """Run (or resume) outer training into ``run_dir``; returns a summary dict.

    Raises SpecError for a bad config or an incompatible, unusable or busy run directory
    (nothing written), and :class:`TrainingError` when theta becomes non-finite (the last
    finite checkpoint is kept) or the disk fills up. ``stop_at`` ends the run early after
    that outer step (as an interruption would), keeping ``outer_steps`` as the run's target.
    """
    validate(cfg)
    run_dir = pathlib.Path(run_dir)
    artifacts.check_outside_package(run_dir)
    primary = jax.process_index() == 0  # the one process that writes files besides orbax
    lock = artifacts.RunLock(run_dir) if primary else None  # one writer per run directory
    try:
        return _train(cfg, run_dir, resume, progress and primary, stop_at, primary)
    finally:
        if lock is not None:
            lock.release()


def _train(cfg, run_dir, resume, progress, stop_at, primary) -> dict:
    _check_run_dir(run_dir, cfg, resume)  # under the lock
    keys = run_keys(cfg.run.seed)
    built = build(cfg)
    state = jax.jit(built.trainer.init)(keys.init, built.lopt.init(keys.theta))
    step_fn, state = compile_step(cfg, built, state)
    start = 0
    if resume:
        ckpt_dir = run_dir / artifacts.CHECKPOINTS
        if not ckpt_dir.is_dir() or not any(p.name.isdigit() for p in ckpt_dir.iterdir()):
            print(f"no checkpoint in {run_dir} (the run ended before its first one); starting "
                  f"from outer step 0", file=sys.stderr)
    ckpt = Checkpointer(run_dir / artifacts.CHECKPOINTS, keep=cfg.run.keep)
    if resume:
        try:
            restored = ckpt.restore_latest(state)
        except CheckpointError as err:
            ckpt.close()
            raise SpecError("run_dir", str(err)) from None
        if restored is not None:
            start, state = restored
        for step, why in ckpt.skipped:
            print(f"warning: checkpoint {step} is corrupt ({why}); moved to "
                  f"{ckpt.directory.name}.unreadable/; resuming from checkpoint {start}",
                  file=sys.stderr)
    if primary:  # on resume, written only once the checkpoint fits it (outer_steps may change)
        artifacts.write_config(run_dir, cfg)
        truncate_after(run_dir / artifacts.METRICS, start)
    if progress:
        print(f"run directory: {run_dir}", file=sys.stderr)
    metrics_file = MetricsWriter(run_dir / artifacts.METRICS if primary else os.devnull)
    r = cfg.run
    end = r.outer_steps if stop_at is None else min(stop_at, r.outer_steps)
    step, saved_step, last = start, start, {}
    bar = tqdm(total=r.outer_steps, initial=start, disable=not progress, file=sys.stderr,
               unit="step", dynamic_ncols=True)
    t_log, s_log = time.perf_counter(), start
    reason, signum, known = "finished", None, None
    resume_with = f"continue with: metaopt train --resume {run_dir}"

    streak = SkipStreak(r.max_skipped, r.log_every)

    def check_finite():
        if not bool(_all_finite(state.theta)):
            raise TrainingError(f"theta became non-finite by outer step {step} (diverged: "
                                f"lower outer.learning_rate or set run.clip_norm); the last "
                                f"finite checkpoint is outer step {saved_step} in {run_dir}")

    with graceful_stop() as stop:
        try:
            while step < end:
                state, metrics = step_fn(step_key(keys, step), state)
                step += 1
                if step == start + 1:  # exclude compilation from the throughput figures
                    jax.block_until_ready(metrics)
                    t_log, s_log = time.perf_counter(), step
                if step % r.log_every == 0 or step == end:
                    check_finite()
                    host = {k: float(v) for k, v in distributed.to_host(metrics).items()}
                    now = time.perf_counter()
                    if step > s_log:  # inner_steps is a static count per outer step
                        host["inner_steps_per_s"] = (host["inner_steps"] * (step - s_log)
                                                     / (now - t_log))
                    t_log, s_log = now, step
                    if primary:
                        metrics_file.write(step, host)
                    streak.update(step, host, saved_step, run_dir)
                    bar.set_postfix_str(f"meta_loss={host['meta_loss']:.4f}, "
                                        f"{host.get('inner_steps_per_s', 0.0):,.0f} inner steps/s")
                    last = host
                bar.update(1)
                if step % r.checkpoint_every == 0 or step == end:
                    check_finite()
                    ckpt.save(step, state)
                    artifacts.save_optimizer(run_dir, cfg, state.theta, step)
                    saved_step = step
                if stop:
                    reason, signum = f"stopped by signal {stop.signum}", stop.signum
                    break
        except TrainingError as err:
            reason, known = "stopped", err
            raise
        except BaseException as err:
            reason = "crashed"
            if _is_disk_full(err):
                reason, known = "stopped", TrainingError(
                    f"no space left on the device of {run_dir} at outer step {step} (a "
                    f"checkpoint needs about {_checkpoint_bytes(run_dir, state) / 2**20:.1f} "
                    f"MiB free); the last checkpoint is outer step {saved_step}; free some "
                    f"space, then {resume_with}")
                raise known from None
            raise
        finally:
            lost = ""
            if step != saved_step and known is None:
                try:
                    if not _intact(state):
                        raise RuntimeError("it was donated to the step that failed")
                    check_finite()
                    ckpt.save(step, state)
                    artifacts.save_optimizer(run_dir, cfg, state.theta, step)
                    saved_step = step
                except Exception as err:  # the failed step's error propagates  # noqa: BLE001
                    why = (str(err).splitlines() or [type(err).__name__])[0][:200]
                    lost = f"the state of outer step {step} is lost ({why}); "
            bar.close()
            for close in (metrics_file.close, ckpt.close):
                try:
                    close()
                except Exception:  # noqa: BLE001  (e.g. a full disk; the first error stands)
                    pass
            if reason not in ("finished", "stopped"):
                where = (f"checkpoint of outer step {saved_step} saved in {run_dir}"
                         if saved_step else f"no checkpoint in {run_dir} (a resume starts over)")
                print(f"{reason}: {lost}{where}; {resume_with}", file=sys.stderr)
    return {"step": step, "reason": reason, "signal": signum, "last_metrics": last,
            "theta_finite": bool(all(np.isfinite(x).all()
                                     for x in jax.tree.leaves(distributed.to_host(state.theta)))),
            "config": cfg.to_json()}
