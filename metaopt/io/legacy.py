"""Run directories written before the self-describing optimizer file (metaopt < 0.2).

    RUN_DIR/config.json     the flat run config: {"lopt": "mlp_small", "episode_length": 200,
                            "meta_loss": "train", "seed": 0, ...}
    RUN_DIR/theta.msgpack   flax-msgpack weights
    RUN_DIR/theta.sha256    their sha256 (hex)

They load as the optimizer they were (:func:`read`): the flat config could not set
learned-optimizer options (every option was its default), the step budget is
``episode_length``, and the validation loss was given to the optimizer exactly when
``meta_loss`` was ``"valid"`` or ``"last"``. Such a run cannot be resumed (its random streams
differ from this version's; ``metaopt train --resume`` says so).

Converting one to the current format (``optimizer.msgpack`` beside the old files)::

    python -m metaopt.io.legacy RUN_DIR [--trust-weights]

``--trust-weights`` converts weights whose checksum file is missing (a pre-0.2 run killed
between writing the weights and their checksum); a checksum that is present must match.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys
from typing import Any

from metaopt import lopt as lopt_lib
from metaopt.io import saved
from metaopt.spec import SpecError

CONFIG, THETA, SHA = "config.json", "theta.msgpack", "theta.sha256"
HOW = "convert weights you trust with: python -m metaopt.io.legacy {dir} --trust-weights"


def flat_config(run_dir: str | pathlib.Path) -> dict[str, Any] | None:
    """The flat pre-0.2 config of ``run_dir``, or ``None`` if its config.json is not one."""
    path = pathlib.Path(run_dir) / CONFIG
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    flat = isinstance(data, dict) and isinstance(data.get("lopt"), str)
    return data if flat and isinstance(data.get("episode_length"), int) else None


def is_legacy(run_dir: str | pathlib.Path) -> bool:
    """``run_dir`` holds a pre-0.2 run (flat config.json or theta.msgpack, no optimizer file)."""
    run_dir = pathlib.Path(run_dir)
    return (run_dir / THETA).exists() or flat_config(run_dir) is not None


def read(run_dir: str | pathlib.Path, trust_weights: bool = False
         ) -> tuple[saved.SavedOptimizer, bytes]:
    """``(description, weights bytes)`` of a pre-0.2 run directory, checksum verified.

    Raises SpecError naming the directory, with how to convert it, if it cannot be read.
    """
    run_dir = pathlib.Path(run_dir)
    cfg = flat_config(run_dir)
    if cfg is None:
        raise SpecError(str(run_dir), f"a pre-0.2 run directory whose {CONFIG} is missing or "
                        f"not the flat pre-0.2 config (it needs 'lopt' and 'episode_length')")
    if not (run_dir / THETA).exists():
        raise SpecError(str(run_dir), f"a pre-0.2 run directory without {THETA} (no trained "
                        f"optimizer was saved)")
    weights = (run_dir / THETA).read_bytes()
    if (run_dir / SHA).exists():
        if hashlib.sha256(weights).hexdigest() != (run_dir / SHA).read_text().strip():
            raise SpecError(str(run_dir / THETA), "checksum mismatch with theta.sha256 (file "
                            "corrupt, modified, or a pre-0.2 run killed while saving); "
                            + HOW.format(dir=run_dir))
    elif not trust_weights:
        raise SpecError(str(run_dir), f"pre-0.2 run directory without {SHA} (interrupted while "
                        f"saving?); " + HOW.format(dir=run_dir))
    try:
        spec = lopt_lib.REGISTRY.spec(cfg["lopt"])
        num_steps = saved.check_budget(cfg["episode_length"])
    except ValueError as err:
        raise SpecError(str(run_dir / CONFIG), f"pre-0.2 config that does not load: {err}"
                        ) from None
    provenance = {"format": "pre-0.2 run directory", "seed": cfg.get("seed", 0), "streams": 1,
                  "meta_loss": cfg.get("meta_loss", "train"), "flat_config": cfg}
    feed = cfg.get("meta_loss") in ("valid", "last")
    return saved.SavedOptimizer(spec, num_steps, feed, provenance, run_dir), weights


def convert(run_dir: str | pathlib.Path, trust_weights: bool = False) -> pathlib.Path:
    """Write ``RUN_DIR/optimizer.msgpack`` from a pre-0.2 run directory (same weights bytes)."""
    desc, weights = read(run_dir, trust_weights)
    from flax import serialization

    theta = serialization.msgpack_restore(weights)
    file = saved.save_optimizer(run_dir, desc.lopt, theta, num_steps=desc.num_steps,
                                feed_valid_loss=desc.feed_valid_loss, provenance=desc.provenance)
    if saved.read_weights(file) != weights:  # the round trip must keep every byte
        file.unlink()
        raise SpecError(str(run_dir), "conversion changed the weights' bytes; nothing written")
    return file


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m metaopt.io.legacy",
                                     description="convert a pre-0.2 run directory")
    parser.add_argument("run_dir")
    parser.add_argument("--trust-weights", action="store_true",
                        help="convert even though theta.sha256 is missing")
    args = parser.parse_args(argv)
    try:
        print(convert(args.run_dir, args.trust_weights))
    except SpecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
