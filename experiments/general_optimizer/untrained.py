"""Save the untrained start of the ``general`` preset's learned optimizer, so that the held-out
suite can evaluate it like the shipped weights (what did meta-training change?).

``theta_0 = lopt.init(k_theta)`` with the run's own key stream (:func:`metaopt.train.loop.
run_keys`), written as a checksummed saved optimizer with the preset's budget:

    .venv/bin/python -m experiments.general_optimizer.untrained --out runs/general-untrained
    .venv/bin/metaopt eval runs/general-untrained --suite heldout --tune-seeds 2 \\
        --reuse-baselines experiments/general_optimizer/results/v1/eval.json \\
        --out runs/eval-untrained
"""

from __future__ import annotations

import argparse
import pathlib

from metaopt import lopt as lopt_lib
from metaopt.train import artifacts, presets
from metaopt.train.loop import run_keys


def main(argv=None) -> pathlib.Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to write optimizer.msgpack into")
    parser.add_argument("--preset", default="general")
    args = parser.parse_args(argv)
    cfg = presets.get(args.preset)
    lopt = lopt_lib.REGISTRY.make(cfg.lopt)
    out = pathlib.Path(args.out)
    artifacts.make_dir(out, "out")
    artifacts.save_optimizer(out, cfg, lopt.init(run_keys(cfg.run.seed).theta), 0)
    print(f"wrote {out}/optimizer.msgpack (outer step 0 of preset {args.preset!r})")
    return out


if __name__ == "__main__":
    main()
