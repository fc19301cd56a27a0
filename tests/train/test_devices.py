"""Data parallelism gives the one-device outer update: 4 CPU devices (through the ``metaopt``
command), and 2 local processes joined by ``jax.distributed`` (gloo collectives), each against
one process running all tasks.

Every run is a fresh subprocess (the device count is fixed when JAX starts), awaited on its
exit with a limit of many minutes (a loaded machine makes it slower, not failing; the two
processes wait for each other inside ``jax.distributed.initialize``). Equality is up to float32
summation order: the per-device means are averaged by ``pmean`` instead of summed in
one reduction, so thetas agree to ~1e-7, not bit for bit; an error in how tasks or randomness
are split would change them at the 1e-2 level.
"""

import math
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

import metaopt
from metaopt.io.metrics import read_metrics
from metaopt.train import artifacts

WORKER = pathlib.Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parents[2]
OVERRIDES = ("estimator.num_tasks=4", "run.outer_steps=3", "run.checkpoint_every=3",
             "run.clip_norm=0")  # as the worker
WAIT = 1800  # seconds: an upper bound for a busy machine, not an expected duration


def _launch(mode, run_dir, *extra):
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    return subprocess.Popen([sys.executable, str(WORKER), mode, str(run_dir), *map(str, extra)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _finish(proc, timeout=WAIT):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-3000:]
    return out


def _theta(run_dir):
    _, theta = metaopt.load_optimizer(run_dir)
    return jax.tree.leaves(theta)


def _assert_same_update(a_dir, b_dir):
    a, b = _theta(a_dir), _theta(b_dir)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # the per-step metrics agree too, and the gradients were not trivially zero
    ma, mb = _metrics(a_dir), _metrics(b_dir)
    assert [m["step"] for m in ma] == [m["step"] for m in mb] == [1, 2, 3]
    for x, y in zip(ma, mb):
        assert x["grad_norm"] > 0.05
        np.testing.assert_allclose(x["meta_loss"], y["meta_loss"], rtol=1e-5)
        np.testing.assert_allclose(x["grad_norm"], y["grad_norm"], rtol=1e-4)
        assert x["inner_steps"] == y["inner_steps"]


def _metrics(run_dir):
    return read_metrics(pathlib.Path(run_dir) / "metrics.jsonl")


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    out = _finish(_launch("single", run_dir))
    assert "devices 1 processes 1 step 3" in out
    return run_dir


def test_four_cpu_devices_give_the_one_device_update(single, tmp_path):
    """``metaopt train ... run.devices=4`` exposes 4 CPU devices itself (validation rejects a
    device count the process does not have, so the run finishing shows they existed)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    cmd = [sys.executable, "-m", "metaopt.cli", "train", "smoke", *OVERRIDES, "run.devices=4",
           "--quiet", "--run-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert "outer step 3:" in _finish(proc)
    assert artifacts.read_config(tmp_path).run.devices == 4
    _assert_same_update(single, tmp_path)


def _free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_two_processes_give_the_one_process_update(single, tmp_path):
    port = _free_port()
    procs = [_launch("multihost", tmp_path, pid, 2, port) for pid in range(2)]
    try:
        outs = [_finish(p) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for out in outs:
        assert "devices 2 processes 2 step 3" in out
    _assert_same_update(single, tmp_path)


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_reverse_mode_estimator_gives_the_one_device_update(tmp_path):
    """A sharded TBPTT step (reverse mode through the replicated theta) equals one device.
    With shard_map's ``check_vma=True`` it silently differed -- the gradient was summed over
    devices twice, as for T1-T2 and IFT -- and ES, full backprop, greedy and RMD did not trace
    (``metaopt.distributed.sharded_step``)."""
    out = _finish(_launch("estimators", tmp_path, "tbptt"))
    runs = {tuple(line.split()[:2]): float(line.split()[2]) for line in out.splitlines()
            if line.split()[:1] == ["tbptt"]}
    assert len(runs) == 2, out[-3000:]
    one, two = runs[("tbptt", "1")], runs[("tbptt", "2")]
    assert abs(one - math.log(0.1)) > 1e-3  # theta moved
    np.testing.assert_allclose(two, one, rtol=1e-6)
