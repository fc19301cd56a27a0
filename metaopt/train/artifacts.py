"""A run directory's files.

    RUN_DIR/config.json        the nested run config (RunConfig.to_json)
    RUN_DIR/metrics.jsonl      one JSON object per logged outer step
    RUN_DIR/checkpoints/N/     orbax checkpoints of the whole OuterState
    RUN_DIR/optimizer.msgpack  the latest learned optimizer, self-describing and checksummed,
                               written atomically (metaopt.io.saved)
    RUN_DIR/.lock              while a run is live: its pid, host and start time; held with
                               fcntl.flock, so the kernel releases it when the process dies
                               (a killed run never blocks its resume)

Nothing inside the installed ``metaopt`` package (its pretrained entries) is ever a run
directory or an output folder (:func:`check_outside_package`).

Run directories of metaopt < 0.2 (flat config.json, theta.msgpack, theta.sha256) still load
as optimizers (:mod:`metaopt.io.legacy`) but cannot be resumed (:func:`read_config` says so).
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import pathlib
import socket
from typing import Any

import jax

from metaopt.io import legacy, saved
from metaopt.spec import SpecError
from metaopt.train.config import RunConfig

CONFIG, METRICS, CHECKPOINTS, LOCK = "config.json", "metrics.jsonl", "checkpoints", ".lock"
PACKAGE = pathlib.Path(__file__).resolve().parents[1]  # the installed metaopt package
OPTIMIZER = saved.FILE
STREAMS = 2  # the run's random streams (1: before 0.2; metaopt.train.loop.run_keys)


def check_outside_package(path: str | os.PathLike, key: str = "run_dir") -> None:
    """SpecError if ``path`` (however spelled: relative, symlinked) lies inside the installed
    package, e.g. a pretrained entry: those are read-only to every command."""
    real = pathlib.Path(os.path.realpath(path))
    if real == PACKAGE or PACKAGE in real.parents:
        raise SpecError(key, f"{path} is inside the installed metaopt package ({PACKAGE}), "
                        f"whose pretrained entries are read-only; choose a directory outside "
                        f"it (e.g. --run-dir runs/NAME, or --out)")


def make_dir(path: pathlib.Path, key: str = "run_dir") -> None:
    """``mkdir -p path``, or SpecError naming it (a file, under a file, unwritable...)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "Permission denied")
    except OSError as err:
        raise SpecError(key, f"cannot use {path} as a directory ({err.strerror or err}); "
                        f"choose another") from None


class RunLock:
    """An exclusive lock on a run directory (module docstring); SpecError naming the process
    that holds it. ``release()`` removes the lock file."""

    def __init__(self, run_dir: pathlib.Path):
        make_dir(run_dir)
        self.path = run_dir / LOCK
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as err:
                raise SpecError("run_dir", f"cannot write in {run_dir} ({err.strerror})"
                                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 300, 0).decode(errors="replace").strip()
                os.close(fd)
                raise SpecError("run_dir", f"{run_dir} is in use by another metaopt process "
                                f"({holder or 'starting'}); wait for it to end or stop it "
                                f"first") from None
            try:  # the holder may have removed the file before we locked it: try again
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self.fd = fd
        now = datetime.datetime.now().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}, started {now}\n".encode(),
                  0)

    def release(self) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def write_config(run_dir: pathlib.Path, cfg: RunConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(cfg.to_json(), indent=2) + "\n")


def read_config(run_dir: str | pathlib.Path) -> RunConfig:
    """The run config of ``run_dir`` (SpecError naming the directory otherwise)."""
    run_dir = pathlib.Path(run_dir)
    path = run_dir / CONFIG
    if not path.exists():
        raise SpecError("run_dir", f"{run_dir} is not a run directory (no {CONFIG})")
    if legacy.flat_config(run_dir) is not None:
        raise SpecError("run_dir", f"{run_dir} was made by metaopt < 0.2 (flat {CONFIG}, "
                        f"older random streams) and cannot be resumed; its optimizer still "
                        f"loads (metaopt eval {run_dir}, metaopt.load_optimizer); start a new "
                        f"run instead")
    try:
        data = json.loads(path.read_text())
    except OSError as err:
        raise SpecError(str(path), f"cannot be read ({err.strerror})") from None
    except ValueError as err:
        raise SpecError(str(path), f"not valid JSON ({err})") from None
    try:
        return RunConfig.from_json(data)
    except SpecError as err:
        raise SpecError(str(path), str(err)) from None
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a value of a wrong kind
        raise SpecError(str(path), f"not a valid run config ({type(err).__name__}: "
                        f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None


def description(cfg: RunConfig, step: int) -> dict[str, Any]:
    """What a run's saved optimizer records besides spec, budget and feed_valid_loss."""
    return {"run_config": cfg.to_json(), "outer_step": int(step), "seed": cfg.run.seed,
            "streams": STREAMS, "meta_loss": cfg.meta_loss}


def save_optimizer(run_dir: pathlib.Path, cfg: RunConfig, theta: Any, step: int) -> None:
    """Write the run's learned optimizer (process 0 only; one atomic file)."""
    from metaopt.distributed import to_host

    if jax.process_index() != 0:  # one writer in multi-process runs
        return
    saved.save_optimizer(run_dir, cfg.lopt, to_host(theta), num_steps=cfg.budget,
                         feed_valid_loss=cfg.inner.feed_valid_loss,
                         provenance=description(cfg, step))
