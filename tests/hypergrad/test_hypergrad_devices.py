"""The hypergradient estimators give the one-device outer update on 4 CPU devices.

A fresh subprocess (the CPU device count is fixed when JAX starts) runs FO, T1-T2, greedy,
IFT and RMD on a quadratic family (learnable momentum SGD) with 8 tasks on one device and
with 2 tasks on each of 4 devices (``metaopt.distributed.data_parallel``: the estimator state's
task axis sharded, gradients averaged over the device axis), 3 outer steps each. Agreement is
up to float32 summation order; a wrong split of tasks or randomness over devices changes theta
at the 1e-3 level.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

WORKER = pathlib.Path(__file__).with_name("devices_worker.py")
ROOT = WORKER.parents[2]


@pytest.fixture(scope="module")
def report():
    # LLVM optimization off: these tiny programs compile ~2x faster, same numbers up to rounding
    flags = (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)
    proc = subprocess.run([sys.executable, str(WORKER)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a 4-device subprocess; tests/train/test_devices.py covers devices by default
@pytest.mark.parametrize("name", ["fo", "t1t2", "greedy", "ift", "rmd"])
def test_four_devices_give_the_one_device_update(report, name):
    assert report["devices"] == 4
    r = report[name]
    assert r["est_state_sharded"], "the estimator state's task axis is split over the devices"
    if name == "fo":  # the validation loss does not see the learning rate: FO is exactly 0
        assert r["moved"] == 0.0
    else:
        assert r["moved"] > 1e-3
    assert r["theta_diff"] <= 1e-6 + 1e-4 * r["moved"], r
    for one, four in r["meta_loss"]:
        assert abs(one - four) <= 1e-5 * max(1.0, abs(one)), r["meta_loss"]
