"""Subprocess body for the device and resume tests: ``python dist_worker.py MODE RUN_DIR ...``.

* ``single``: one device runs all tasks;
* ``multihost PID NPROC PORT``: process PID of NPROC local processes (gloo collectives), each
  with one CPU device; ``single`` and ``multihost`` train the same config for a few steps;
* ``kill KILL_AT OVERRIDE...``: trains the smoke preset with the overrides and SIGKILLs
  itself inside outer step ``KILL_AT`` (after the step was dispatched and its input state
  donated): a kill at a known step, with no race against the test's clock;
* ``estimators NAME...``: with 2 CPU devices, two outer steps of each estimator on quadratics
  (learnable SGD) on 1 and on 2 devices; prints ``NAME DEVICES log_lr`` per run.
"""

import os
import signal
import sys

import jax

mode, run_dir = sys.argv[1], sys.argv[2]
if mode == "multihost":
    from metaopt import distributed

    pid, nproc, port = (int(a) for a in sys.argv[3:6])
    distributed.initialize(f"localhost:{port}", nproc, pid)
if mode == "estimators":
    from metaopt import distributed

    distributed.expose_cpu_devices(2)

from metaopt.train import loop, presets  # noqa: E402

if mode == "kill":
    kill_at, overrides = int(sys.argv[3]), sys.argv[4:]
    real = loop.compile_step

    def killing(cfg, built, state):
        step_fn, state = real(cfg, built, state)
        calls = [0]

        def step(key, s):
            out = step_fn(key, s)
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            return out

        return step, state

    loop.compile_step = killing
    loop.train(presets.get("smoke").with_overrides(overrides), run_dir, progress=False)
    raise SystemExit("not killed")

if mode == "estimators":
    from metaopt import estimators
    from metaopt.spec import Spec
    from metaopt.train.config import RunConfig

    options = {"num_tasks": 2, "sigma": 0.1, "unroll_length": 4, "gamma": 0.9}
    for name in sys.argv[3:]:
        allowed = estimators.REGISTRY.options(name)
        spec = Spec(name, {k: v for k, v in options.items() if k in allowed})
        for devices in (1, 2):
            cfg = RunConfig(task="quadratic", schedule=Spec("constant", {"length": 8}),
                            lopt="sgd", estimator=spec, outer=Spec("sgd", {"learning_rate": 0.1}),
                            run={"devices": devices, "clip_norm": 0.0})
            built, keys = loop.build(cfg), loop.run_keys(0)
            state = jax.jit(built.trainer.init)(keys.init, built.lopt.init(keys.theta))
            step, state = loop.compile_step(cfg, built, state)
            for k in range(2):
                state, _ = step(loop.step_key(keys, k), state)
            print(name, devices, repr(float(jax.device_get(state.theta["log_lr"]))), flush=True)
    raise SystemExit(0)

devices = {"single": 1, "multihost": 0}[mode]
cfg = presets.get("smoke").with_overrides([
    "estimator.num_tasks=4", "run.outer_steps=3", "run.checkpoint_every=3",
    f"run.devices={devices}", "run.clip_norm=0"])
summary = loop.train(cfg, run_dir, progress=False)
print("devices", jax.device_count(), "processes", jax.process_count(), "step", summary["step"])
