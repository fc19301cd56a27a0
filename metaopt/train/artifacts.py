"""A run directory's files, and learned-optimizer weights as flax msgpack (never pickle).

    RUN_DIR/config.json      the TrainConfig (JSON)
    RUN_DIR/metrics.jsonl    one JSON object per logged outer step
    RUN_DIR/checkpoints/N/   orbax checkpoints of the whole OuterState
    RUN_DIR/theta.msgpack    the latest learned-optimizer metaparameters
    RUN_DIR/theta.sha256     their checksum
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import jax
from flax import serialization

from metaopt.config import ConfigError, from_dict, to_dict
from metaopt.train.config import TrainConfig

CONFIG, METRICS, CHECKPOINTS, THETA = "config.json", "metrics.jsonl", "checkpoints", "theta.msgpack"


def write_config(run_dir: pathlib.Path, cfg: TrainConfig) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG).write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")


def read_config(run_dir: str | pathlib.Path) -> TrainConfig:
    path = pathlib.Path(run_dir) / CONFIG
    if not path.exists():
        raise ConfigError("run_dir", f"{path.parent} is not a run directory (no {CONFIG})")
    return from_dict(TrainConfig, json.loads(path.read_text()))


def save_theta(run_dir: pathlib.Path, theta: Any) -> None:
    from metaopt.distributed import to_host

    if jax.process_index() != 0:  # one writer in multi-process runs
        return
    data = serialization.to_bytes(to_host(theta))
    tmp = run_dir / (THETA + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(run_dir / THETA)
    (run_dir / "theta.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def load_theta(run_dir: str | pathlib.Path, like: Any) -> Any:
    """theta from ``run_dir``, checked against its sha256; ``like`` gives the structure."""
    run_dir = pathlib.Path(run_dir)
    data = (run_dir / THETA).read_bytes()
    want = (run_dir / "theta.sha256").read_text().strip()
    if hashlib.sha256(data).hexdigest() != want:
        raise ValueError(f"{run_dir / THETA}: checksum mismatch (file corrupt or modified)")
    return serialization.from_bytes(like, data)


def load_learned_optimizer(run_dir: str | pathlib.Path):
    """``(lopt, theta)`` of a finished or running run directory."""
    from metaopt import lopt as lopt_lib

    cfg = read_config(run_dir)
    lopt = lopt_lib.make(cfg.lopt)
    like = lopt.init(jax.random.key(0))
    return lopt, load_theta(run_dir, like)
