"""Checkpoints resume bit-for-bit: after SIGKILL, after SIGTERM, past a corrupt checkpoint."""

import dataclasses
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from metaopt.io.checkpoint import Checkpointer
from metaopt.train import artifacts, presets
from metaopt.train.loop import train

TOTAL = 12  # the straight run's outer steps; the killed run is stopped part-way and resumed
CFG = dataclasses.replace(presets.PRESETS["smoke"], outer_steps=TOTAL, checkpoint_every=1,
                          log_every=1)
# the interrupted runs aim far beyond TOTAL so that the signal surely lands mid-run;
# outer_steps is the one key a resume may change, and keys depend on the step alone
OVERRIDES = ["outer_steps=100000", "checkpoint_every=1", "log_every=1"]


def _theta(run_dir):
    lopt, theta = artifacts.load_learned_optimizer(run_dir)
    return jax.tree.leaves(theta)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    summary = train(CFG, run_dir, progress=False)
    assert summary["step"] == TOTAL and summary["reason"] == "finished"
    return run_dir


def _start(run_dir, *extra):
    cmd = [sys.executable, "-m", "metaopt.cli", "train", "smoke", *OVERRIDES, "--quiet",
           "--run-dir", str(run_dir), *extra]
    log = open(pathlib.Path(run_dir).parent / f"{pathlib.Path(run_dir).name}.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, text=True)
    proc.log = log
    return proc


def _stderr(proc):
    proc.log.close()
    return pathlib.Path(proc.log.name).read_text()


def _wait_for_checkpoint(run_dir, step, proc, timeout=240):
    t0 = time.time()
    while time.time() - t0 < timeout:
        ck = pathlib.Path(run_dir) / "checkpoints" / str(step)
        if ck.exists() and proc.poll() is None:
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before checkpoint {step}: {_stderr(proc)}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("timed out waiting for a checkpoint")


def _resume(run_dir, *overrides):
    out = subprocess.run([sys.executable, "-m", "metaopt.cli", "train", "--resume",
                          str(run_dir), *overrides, "--quiet"], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr
    return out


def test_sigkill_then_resume_is_bit_identical(straight, tmp_path):
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _stderr(proc)
    steps = Checkpointer(tmp_path / "checkpoints").steps()
    assert proc.returncode == -signal.SIGKILL and steps and 3 <= max(steps) < TOTAL, steps
    _resume(tmp_path, f"outer_steps={TOTAL}")
    for a, b in zip(_theta(straight), _theta(tmp_path)):
        np.testing.assert_array_equal(a, b)
    rows = [r["step"] for r in artifacts_metrics(tmp_path)]
    assert rows == list(range(1, TOTAL + 1))  # no duplicated or missing metric rows


def artifacts_metrics(run_dir):
    from metaopt.io.metrics import read_metrics

    return read_metrics(pathlib.Path(run_dir) / "metrics.jsonl")


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(straight, tmp_path):
    proc = _start(tmp_path)
    _wait_for_checkpoint(tmp_path, 2, proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
    err = _stderr(proc)
    assert proc.returncode == 0, err
    assert f"stopped by signal {int(signal.SIGTERM)}" in err and "--resume" in err
    stopped_at = int(err.split("checkpoint of outer step ")[1].split()[0])
    assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == stopped_at
    if stopped_at < TOTAL:
        _resume(tmp_path, f"outer_steps={TOTAL}")
        for a, b in zip(_theta(straight), _theta(tmp_path)):
            np.testing.assert_array_equal(a, b)


def test_corrupt_latest_checkpoint_falls_back(straight, tmp_path):
    cfg = dataclasses.replace(CFG, keep=3)
    train(cfg, tmp_path, progress=False, stop_at=5)
    latest = tmp_path / "checkpoints" / "5"
    for f in latest.rglob("*"):
        if f.is_file() and "METADATA" not in f.name and "commit" not in f.name:
            f.write_bytes(b"corrupt")
    summary = train(cfg, tmp_path, resume=True, progress=False)
    assert summary["step"] == TOTAL
    for a, b in zip(_theta(straight), _theta(tmp_path)):
        np.testing.assert_array_equal(a, b)


def test_incompatible_run_dir_is_refused(straight, capsys):
    from metaopt.cli import main

    code = main(["train", "smoke", *OVERRIDES, "lopt=mlp", "--run-dir", str(straight)])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "lopt" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


if os.environ.get("METAOPT_SKIP_SUBPROCESS"):
    pytestmark = pytest.mark.skip("subprocess tests disabled")
