"""Reliability of a run directory (issue 15): checkpoints are verified by digest, only genuine
corruption falls back, a non-finite theta stops the run, a full disk ends with one line, and
every bad input exits 2 with one line and leaves every directory as it was.

In-process (``metaopt.cli.main``); the tests that need a second process are in test_resume.py.
"""

import json
import os
import pathlib
import shutil
import subprocess

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metaopt
from metaopt.cli import main
from metaopt.io.checkpoint import Checkpointer
from metaopt.spec import Spec
from metaopt.train import artifacts, build
from metaopt.train.config import RunConfig
from metaopt.train.loop import TrainingError, train

TOTAL = 4
KNOBS = ["run.checkpoint_every=1", "run.log_every=1"]
# tiny, so that each test compiles in seconds; no clipping (the non-finite test needs none)
CFG = RunConfig(task=Spec("quadratic", {"dim": 64}), schedule=Spec("constant", {"length": 8}),
                lopt="adam",
                estimator=Spec("pes", {"num_tasks": 2, "unroll_length": 4, "sigma": 0.01}),
                outer=Spec("sgd", {"learning_rate": 1e-2}),
                run={"outer_steps": TOTAL, "checkpoint_every": 1, "log_every": 1,
                     "clip_norm": 0.0})
PRETRAINED = pathlib.Path(metaopt.__file__).parent / "pretrained" / "mlp_small_digits"


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("straight")
    assert train(CFG, run_dir, progress=False)["reason"] == "finished"
    return run_dir


def _snapshot(*roots):
    """Every file and directory under ``roots`` with its size and content digest."""
    out = {}
    for root in roots:
        root = pathlib.Path(root)
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            out[str(p)] = p.read_bytes() if p.is_file() else "dir"
    return out


def _like():
    built = build.build(CFG)
    return jax.jit(built.trainer.init)(jax.random.key(0), built.lopt.init(jax.random.key(1)))


def _theta(source):
    return jax.tree.leaves(metaopt.load_optimizer(source)[1])


def _run(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip()
    return code, err


def _one_line(err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    return len(lines) == 1 and "Traceback" not in err


def _copy(straight, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(straight, run_dir)
    return run_dir


# ------------------------------------------------------------------ checkpoints (items 1, 2)


@pytest.mark.slow  # compiles a run (default suite < 10 min on 2 cores)
def test_flipped_byte_is_detected_and_falls_back(straight, tmp_path, capsys):
    run_dir = _copy(straight, tmp_path)
    (run_dir / "optimizer.msgpack").unlink()  # the final theta must be the resume's own
    data = [f for f in (run_dir / "checkpoints" / str(TOTAL)).rglob("*")
            if f.is_file() and "ocdbt.process_0/d/" in str(f)]
    biggest = max(data, key=lambda f: f.stat().st_size)
    raw = bytearray(biggest.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one bit in the middle of the array data
    biggest.write_bytes(bytes(raw))
    code, err = _run(["train", "--resume", str(run_dir), "--quiet"], capsys)
    assert code == 0, err
    assert f"checkpoint {TOTAL} is corrupt" in err
    assert f"resuming from checkpoint {TOTAL - 1}" in err
    assert (run_dir / "checkpoints.unreadable" / str(TOTAL)).is_dir()
    for a, b in zip(_theta(straight), _theta(run_dir), strict=True):
        np.testing.assert_array_equal(a, b)


def test_permission_error_stops_with_exit_2_and_moves_nothing(straight, tmp_path, capsys,
                                                               monkeypatch):
    run_dir = _copy(straight, tmp_path)
    before = _snapshot(run_dir)

    def denied(self, step, like):
        raise PermissionError(13, "Permission denied", str(self.directory / str(step)))

    monkeypatch.setattr(Checkpointer, "restore", denied)
    code, err = _run(["train", "--resume", str(run_dir)], capsys)
    assert code == 2 and _one_line(err) and "Permission denied" in err, err
    assert _snapshot(run_dir) == before


def test_config_mismatch_stops_with_exit_2_and_moves_nothing(straight, tmp_path, capsys):
    run_dir = _copy(straight, tmp_path)
    cfg = json.loads((run_dir / "config.json").read_text())
    del cfg["task"]["dim"]  # the default (10) replaces the run's 64
    (run_dir / "config.json").write_text(json.dumps(cfg))
    before = _snapshot(run_dir)
    code, err = _run(["train", "--resume", str(run_dir)], capsys)
    assert code == 2 and _one_line(err) and "other shapes" in err, err
    assert _snapshot(run_dir) == before


def test_every_checkpoint_corrupt_stops_and_moves_nothing(straight, tmp_path, capsys):
    run_dir = _copy(straight, tmp_path)
    for f in (run_dir / "checkpoints").rglob("*"):
        if f.is_file() and "METADATA" not in f.name and "commit" not in f.name:
            f.write_bytes(b"corrupt")
    before = _snapshot(run_dir)
    code, err = _run(["train", "--resume", str(run_dir)], capsys)
    assert code == 2 and _one_line(err) and "every checkpoint" in err, err
    assert _snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_without_checkpoint_says_so(tmp_path, capsys):
    artifacts.write_config(tmp_path, CFG)
    code, err = _run(["train", "--resume", str(tmp_path), "--quiet", "run.outer_steps=1"], capsys)
    assert code == 0 and "no checkpoint in" in err, err


@pytest.mark.slow
def test_checkpoint_digest_cost_is_small(straight, tmp_path):
    """Hashing is once per save over the state's bytes: report its cost against the save."""
    import time

    from metaopt.io.checkpoint import digests, to_saveable

    ckpt = Checkpointer(straight / "checkpoints")
    state = ckpt.restore(TOTAL, _like())
    ckpt.close()
    saveable = to_saveable(state)
    t0 = time.perf_counter()
    digests(saveable)
    t_hash = time.perf_counter() - t0
    ck2 = Checkpointer(tmp_path / "c")
    t0 = time.perf_counter()
    ck2.save(1, state)
    t_save = time.perf_counter() - t0
    ck2.close()
    print(f"digest {t_hash * 1e3:.2f} ms of a {t_save * 1e3:.0f} ms save")
    assert t_hash < 0.2 * t_save


# ---------------------------------------------------------------------- non-finite (item 4)


@pytest.mark.slow  # compiles a run (default suite < 10 min on 2 cores)
def test_nonfinite_theta_stops_the_run_and_keeps_the_last_finite_checkpoint(
        straight, tmp_path, capsys, monkeypatch):
    """Theta turns non-finite at outer step 6 (as with an overflowing outer update): the run
    stops with exit 1 and one line; checkpoint 5 and optimizer.msgpack stay finite."""
    from metaopt.train import loop

    run_dir = _copy(straight, tmp_path)
    real = loop.compile_step

    def poisoned(cfg, built, state):
        step_fn, state = real(cfg, built, state)

        def step(key, s):
            s, metrics = step_fn(key, s)
            bad = jax.tree.map(lambda t: jnp.where(s.step >= 6, t * jnp.inf, t), s.theta)
            return s._replace(theta=bad), metrics

        return jax.jit(step), state

    monkeypatch.setattr(loop, "compile_step", poisoned)
    code, err = _run(["train", "--resume", str(run_dir), "--quiet", "run.outer_steps=8"],
                     capsys)
    assert code == 1 and _one_line(err) and "non-finite by outer step 6" in err, err
    assert "last finite checkpoint is outer step 5" in err
    assert Checkpointer(run_dir / "checkpoints").steps()[-1] == 5
    assert all(np.isfinite(x).all() for x in _theta(run_dir))


def test_skip_streak_counts_consecutive_unusable_logged_steps():
    """Logged every 10 steps: a skipped step or an all-masked zero gradient counts, a usable
    step (or a zero gradient with nothing masked) resets, and 3 in a row stop the run."""
    from metaopt.train.loop import SkipStreak

    bad = {"skipped": 1.0, "grad_norm": float("nan"), "masked_tasks": 0.0}
    masked = {"skipped": 0.0, "grad_norm": 0.0, "masked_tasks": 2.0}
    good = {"skipped": 0.0, "grad_norm": 0.3, "masked_tasks": 1.0}
    zero = {"skipped": 0.0, "grad_norm": 0.0, "masked_tasks": 0.0}
    streak = SkipStreak(3, 10)
    for step, host, count in ((10, bad, 1), (20, masked, 2), (30, good, 0), (40, zero, 0),
                              (50, masked, 1), (60, bad, 2)):
        streak.update(step, host, 40, "run")
        assert streak.count == count, step
    with pytest.raises(TrainingError, match="from 50 to 70 .*max_skipped=3.*step 40 in run"):
        streak.update(70, masked, 40, "run")
    never = SkipStreak(0, 10)
    for step in range(10, 1000, 10):
        never.update(step, bad, 0, "run")  # 0 disables the check


@pytest.mark.slow  # compiles a run
def test_huge_sigma_masks_every_task_and_stops_the_run(tmp_path):
    """sigma = 1e30 makes every perturbed loss non-finite, so every task is masked and the
    outer gradient is exactly zero; with run.max_skipped=3 the run stops at outer step 3."""
    data = CFG.to_json()
    data["estimator"]["sigma"] = 1e30
    data["run"].update(max_skipped=3, outer_steps=20)
    with pytest.raises(TrainingError, match="from 1 to 3 "):
        train(RunConfig.from_json(data), tmp_path / "r", progress=False)


# --------------------------------------------------------------------- disk full (item 6)


@pytest.mark.slow
def test_full_disk_ends_with_one_line_and_saved_checkpoints_restore(tmp_path, capsys):
    mnt = tmp_path / "small"
    mnt.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       check=True, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("cannot mount a tmpfs here")
    try:
        run_dir = mnt / "run"
        cfg = CFG.with_overrides(["run.outer_steps=500", "run.keep=1000"])
        with pytest.raises(TrainingError) as info:
            train(cfg, run_dir, progress=False)
        err = capsys.readouterr().err
        msg = str(info.value)
        assert "no space left" in msg and "--resume" in msg and "MiB free" in msg
        assert len(msg.splitlines()) == 1 and not err.strip(), err  # nothing else printed
        ckpt = Checkpointer(run_dir / "checkpoints", keep=1000)
        like = _like()
        steps = ckpt.steps()
        assert steps
        for step in steps:
            ckpt.restore(step, like)
        ckpt.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False, timeout=60)


# ------------------------------------------------------------------- bad inputs (items 5, 7)


def _legacy_without_sha(d):
    (d / "config.json").write_text(json.dumps({"lopt": "mlp_small", "episode_length": 50}))
    (d / "theta.msgpack").write_bytes(b"\x80")
    return ["eval", str(d)]


def _resume_with_config(text):
    def make(d):
        (d / "config.json").write_text(text)
        return ["train", "--resume", str(d)]
    return make


def _wrong_type_config(d):
    cfg = CFG.to_json()
    cfg["run"]["seed"] = "zero"
    (d / "config.json").write_text(json.dumps(cfg))
    return ["train", "--resume", str(d)]


def _metrics(text):
    def make(d):
        (d / "metrics.jsonl").write_text(text)
        return ["plot", str(d)]
    return make


def _file_as_run_dir(d):
    (d / "f").write_text("x")
    return ["train", "smoke", "--run-dir", str(d / "f")]


def _under_a_file(d):
    (d / "f").write_text("x")
    return ["train", "smoke", "--run-dir", str(d / "f" / "run")]


def _symlink_to_pretrained(d):
    (d / "link").symlink_to(PRETRAINED)
    return ["train", "--resume", str(d / "link")]


def _relative_pretrained(d):
    return ["train", "--resume", os.path.relpath(PRETRAINED)]


def _dotdot_pretrained(d):
    return ["train", "--resume", str(PRETRAINED / ".." / PRETRAINED.name)]


def _run_dir_in_package(d):
    return ["train", "smoke", "--run-dir", str(PRETRAINED.parent / "new")]


def _eval_out_in_package(d):
    (d / "link").symlink_to(PRETRAINED)
    return ["eval", "mlp_small_digits", "--out", str(d / "link" / "eval")]


BAD = {
    "devices=-1": lambda d: ["train", "smoke", "run.devices=-1", "--run-dir", str(d / "r")],
    "seed=2**64": lambda d: ["train", "smoke", f"run.seed={2**64}", "--run-dir", str(d / "r")],
    "outer_steps=1e30": lambda d: ["train", "smoke", "run.outer_steps=1e30",
                                   "--run-dir", str(d / "r")],
    "lr=inf": lambda d: ["train", "smoke", "outer.learning_rate=inf", "--run-dir", str(d / "r")],
    "clip_norm=nan": lambda d: ["train", "smoke", "run.clip_norm=nan", "--run-dir", str(d / "r")],
    "max_skipped=-1": lambda d: ["train", "smoke", "run.max_skipped=-1", "--run-dir",
                                 str(d / "r")],
    "sigma=inf": lambda d: ["train", "smoke", "estimator.sigma=inf", "--run-dir", str(d / "r")],
    "run dir is a file": _file_as_run_dir,
    "run dir under a file": _under_a_file,
    "run dir under /proc": lambda d: ["train", "smoke", "--run-dir", "/proc/metaopt-run"],
    "malformed config.json": _resume_with_config("{not json"),
    "config.json is a list": _resume_with_config("[1, 2]"),
    "config.json value of a wrong type": _wrong_type_config,
    "eval without theta.sha256": _legacy_without_sha,
    "metrics line not an object": _metrics('{"step": 1, "meta_loss": 1.0}\n[1, 2]\n'),
    "metrics line without step": _metrics('{"step": 1, "meta_loss": 1.0}\n{"meta_loss": 2}\n'),
    "bad --process-id": lambda d: ["train", "smoke", "--coordinator", "localhost:1",
                                   "--num-processes", "2", "--process-id", "5"],
    "resume pretrained (symlink)": _symlink_to_pretrained,
    "resume pretrained (relative)": _relative_pretrained,
    "resume pretrained (..)": _dotdot_pretrained,
    "run dir in the package": _run_dir_in_package,
    "eval --out in the package": _eval_out_in_package,
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tmp_path, capsys):
    args = BAD[case](tmp_path)
    before = _snapshot(tmp_path, PRETRAINED.parent)
    code, err = _run(args, capsys)
    assert code == 2, err
    assert _one_line(err), err
    assert _snapshot(tmp_path, PRETRAINED.parent) == before


def test_bad_process_count_from_the_environment(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("METAOPT_COORDINATOR", "localhost:1")
    monkeypatch.setenv("METAOPT_NUM_PROCESSES", "abc")
    code, err = _run(["train", "smoke", "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2 and _one_line(err) and "METAOPT_NUM_PROCESSES" in err, err
    assert not (tmp_path / "r").exists()


def test_default_run_dirs_in_the_same_second_differ(tmp_path, monkeypatch):
    from metaopt.cli import _default_run_dir

    monkeypatch.chdir(tmp_path)
    assert len({_default_run_dir("smoke") for _ in range(3)}) == 3
