"""Checkpoints resume bit-for-bit: after SIGKILL, after SIGTERM, past a corrupt checkpoint.

Subprocesses are awaited on events -- a checkpoint's appearance, the process's exit -- with
limits of many minutes, so a loaded machine only makes the tests slower; the SIGKILL lands at
a known outer step (the worker kills itself inside it), not when the test's polling notices.
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import metaopt
from metaopt.io.checkpoint import Checkpointer
from metaopt.io.metrics import read_metrics
from metaopt.train import presets
from metaopt.train.loop import train

WORKER = pathlib.Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parents[2]
WAIT = 1800  # seconds: an upper bound for a busy machine, not an expected duration
TOTAL = 12  # the straight run's outer steps; the interrupted runs are stopped part-way
OVERRIDES = ["run.outer_steps=100000", "run.checkpoint_every=1", "run.log_every=1"]
CFG = presets.get("smoke").with_overrides([f"run.outer_steps={TOTAL}", *OVERRIDES[1:]])


def _theta(run_dir):
    return jax.tree.leaves(metaopt.load_optimizer(run_dir)[1])


def _env():
    return dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    summary = train(CFG, run_dir, progress=False)
    assert summary["step"] == TOTAL and summary["reason"] == "finished"
    return run_dir


def _resume(run_dir, *overrides):
    out = subprocess.run([sys.executable, "-m", "metaopt.cli", "train", "--resume",
                          str(run_dir), *overrides, "--quiet"], capture_output=True, text=True,
                         timeout=WAIT, env=_env(), cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.slow  # default suite < 10 min; the SIGTERM test resumes by default
def test_sigkill_then_resume_is_bit_identical(straight, tmp_path):
    out = subprocess.run([sys.executable, str(WORKER), "kill", str(tmp_path), "6", *OVERRIDES],
                         capture_output=True, text=True, timeout=WAIT, env=_env(), cwd=ROOT)
    assert out.returncode == -signal.SIGKILL, out.stderr[-3000:]
    assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == 5  # the last completed step
    assert (tmp_path / ".lock").exists()  # left by the killed run: it must not block the resume
    _resume(tmp_path, f"run.outer_steps={TOTAL}")
    for a, b in zip(_theta(straight), _theta(tmp_path), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert rows == list(range(1, TOTAL + 1))  # no duplicated or missing metric rows


def _wait_for_checkpoint(run_dir, step, proc, log):
    """Until checkpoint ``step`` exists (polled), the process ends, or WAIT passes."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < WAIT:
        if (pathlib.Path(run_dir) / "checkpoints" / str(step)).exists():
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended before checkpoint {step}: {log.read_text()[-3000:]}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail(f"no checkpoint {step} after {WAIT} s")


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_sigterm_writes_a_checkpoint_and_exits_143(straight, tmp_path):
    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "metaopt.cli", "train", "smoke",
                                 *OVERRIDES, "--quiet", "--run-dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=err, env=_env(), cwd=ROOT)
        _wait_for_checkpoint(tmp_path, 2, proc, log)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=WAIT)
    text = log.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, text  # interrupted, not finished
    assert f"stopped by signal {int(signal.SIGTERM)}" in text and "--resume" in text
    stopped_at = int(text.split("checkpoint of outer step ")[1].split()[0])
    assert Checkpointer(tmp_path / "checkpoints").steps()[-1] == stopped_at
    if stopped_at < TOTAL:
        _resume(tmp_path, f"run.outer_steps={TOTAL}")
        for a, b in zip(_theta(straight), _theta(tmp_path), strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_second_process_on_a_live_run_dir_is_refused(straight, tmp_path, capsys):
    """A run is paused (SIGSTOP) after its first checkpoint; a resume and a new run in its
    directory are refused at once naming it; continued, it ends as a lone run would."""
    from metaopt.cli import main

    log = tmp_path.parent / f"{tmp_path.name}.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "metaopt.cli", "train", "smoke",
                                 f"run.outer_steps={TOTAL}", *OVERRIDES[1:], "--quiet",
                                 "--run-dir", str(tmp_path)],
                                stdout=subprocess.DEVNULL, stderr=err, env=_env(), cwd=ROOT)
        _wait_for_checkpoint(tmp_path, 1, proc, log)
        proc.send_signal(signal.SIGSTOP)
        try:
            for args in (["train", "--resume", str(tmp_path)],
                         ["train", "smoke", f"run.outer_steps={TOTAL}", *OVERRIDES[1:],
                          "--run-dir", str(tmp_path)]):
                code = main(args)
                msg = capsys.readouterr().err
                assert code == 2 and f"in use by another metaopt process (pid {proc.pid}" in msg
                assert len(msg.strip().splitlines()) == 1, msg
        finally:
            proc.send_signal(signal.SIGCONT)
        proc.wait(timeout=WAIT)
    assert proc.returncode == 0, log.read_text()[-3000:]
    for a, b in zip(_theta(straight), _theta(tmp_path), strict=True):
        np.testing.assert_array_equal(a, b)
    rows = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")]
    assert rows == list(range(1, TOTAL + 1))
    assert not (tmp_path / ".lock").exists()


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_corrupt_latest_checkpoint_falls_back(straight, tmp_path):
    """A copy of the finished straight run (checkpoints 10, 11, 12) with checkpoint 12
    corrupted: the resume reports it, moves it aside, redoes step 12 from checkpoint 11 and
    ends with the straight run's theta."""
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    (run_dir / "optimizer.msgpack").unlink()  # so that the final theta is the resume's own
    latest = run_dir / "checkpoints" / str(TOTAL)
    for f in latest.rglob("*"):
        if f.is_file() and "METADATA" not in f.name and "commit" not in f.name:
            f.write_bytes(b"corrupt")
    summary = train(CFG, run_dir, resume=True, progress=False)
    assert summary["step"] == TOTAL
    assert Checkpointer(run_dir / "checkpoints").steps()[-1] == TOTAL  # written again
    assert (tmp_path / "run" / "checkpoints.unreadable" / str(TOTAL)).is_dir()
    for a, b in zip(_theta(straight), _theta(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_incompatible_run_dir_is_refused(straight, capsys):
    from metaopt.cli import main

    code = main(["train", "smoke", *OVERRIDES, "lopt=mlp", "--run-dir", str(straight)])
    err = capsys.readouterr().err
    assert code == 2 and "different config" in err and "lopt.name" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


if os.environ.get("METAOPT_SKIP_SUBPROCESS"):
    pytestmark = pytest.mark.skip("subprocess tests disabled")
