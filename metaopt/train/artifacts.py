"""A run directory's files.

    RUN_DIR/config.json        the nested run config (RunConfig.to_json)
    RUN_DIR/metrics.jsonl      one JSON object per logged outer step
    RUN_DIR/checkpoints/N/     orbax checkpoints of the whole OuterState
    RUN_DIR/optimizer.msgpack  the latest learned optimizer, self-describing and checksummed,
                               written atomically (metaopt.io.saved)

Run directories of metaopt < 0.2 (flat config.json, theta.msgpack, theta.sha256) still load
as optimizers (:mod:`metaopt.io.legacy`) but cannot be resumed (:func:`read_config` says so).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax

from metaopt.io import legacy, saved
from metaopt.spec import SpecError
from metaopt.train.config import RunConfig

CONFIG, METRICS, CHECKPOINTS = "config.json", "metrics.jsonl", "checkpoints"
OPTIMIZER = saved.FILE
STREAMS = 2  # the run's random streams (1: before 0.2; metaopt.train.loop.run_keys)


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
    except ValueError as err:
        raise SpecError(str(path), f"not valid JSON ({err})") from None
    try:
        return RunConfig.from_json(data)
    except SpecError as err:
        raise SpecError(str(path), str(err)) from None


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
