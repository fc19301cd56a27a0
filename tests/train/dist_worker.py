"""Subprocess body for the device tests: ``python dist_worker.py MODE RUN_DIR [PID NPROC PORT]``.

MODE ``single``: one device runs all tasks; ``multihost``: this is process PID of NPROC local
processes (gloo collectives), each with one CPU device. Every mode trains the same config for a
few outer steps into RUN_DIR.
"""

import dataclasses
import sys

import jax

mode, run_dir = sys.argv[1], sys.argv[2]
if mode == "multihost":
    from metaopt import distributed

    pid, nproc, port = (int(a) for a in sys.argv[3:6])
    distributed.initialize(f"localhost:{port}", nproc, pid)

from metaopt.train import presets  # noqa: E402
from metaopt.train.loop import train  # noqa: E402

devices = {"single": 1, "multihost": 0}[mode]
cfg = dataclasses.replace(presets.PRESETS["smoke"], num_tasks=4, outer_steps=3,
                          checkpoint_every=3, devices=devices, clip_norm=0.0)
summary = train(cfg, run_dir, progress=False)
print("devices", jax.device_count(), "processes", jax.process_count(), "step", summary["step"])
