"""A saved learned optimizer describes itself and loads as exactly that optimizer; the file is
written atomically; corrupt files are refused naming the file; the shipped pretrained entry
kept its weights byte for byte; pre-0.2 run directories still load."""

import hashlib
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

import metaopt
from metaopt import lopt as lopt_lib
from metaopt.io import legacy, saved
from metaopt.spec import Spec, SpecError

SPEC = Spec("mlp_small", {"hidden": (8,), "step_mult": 0.01})  # non-default options


def _theta(spec=SPEC, seed=0):
    return lopt_lib.REGISTRY.make(spec).init(jax.random.key(seed))


def _update(tx, theta_like_params=None):
    params = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.ones(4)}
    grads = jax.tree.map(lambda p: jnp.sin(3.0 * p) + 0.1, params)
    state = tx.init(params)
    for _ in range(3):  # a few steps, so the step embedding k / T matters
        u, state = tx.update(grads, state, params, loss=jnp.float32(1.0))
    return jax.tree.leaves(u)


def test_round_trip_keeps_every_option_and_the_trained_budget(tmp_path):
    theta = _theta()
    file = metaopt.save_optimizer(tmp_path, SPEC, theta, num_steps=77, feed_valid_loss=True,
                                  provenance={"seed": 3})
    assert file == tmp_path / "optimizer.msgpack"
    desc = metaopt.describe_optimizer(tmp_path)
    assert desc.lopt == lopt_lib.REGISTRY.spec("mlp_small", SPEC.options)
    assert desc.lopt.options["hidden"] == (8,) and desc.lopt.options["step_mult"] == 0.01
    assert (desc.num_steps, desc.feed_valid_loss, desc.provenance) == (77, True, {"seed": 3})
    opt, loaded = metaopt.load_optimizer(tmp_path)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    raw = lopt_lib.REGISTRY.make(SPEC)
    default = _update(opt.optimizer(loaded))
    for a, b in zip(default, _update(raw.optimizer(theta, num_steps=77))):
        np.testing.assert_array_equal(a, b)  # optimizer(theta) uses the trained budget
    differ = [not np.array_equal(a, b)
              for a, b in zip(default, _update(raw.optimizer(theta, num_steps=1000)))]
    assert any(differ)  # ... which is not the old 1,000-step default
    assert metaopt.load_optimizer(file)[0].name == "mlp_small"  # the file itself is a source


def test_corrupt_or_mismatched_files_are_refused_naming_the_file(tmp_path):
    file = saved.save_optimizer(tmp_path, SPEC, _theta(), num_steps=5, feed_valid_loss=False)
    good = file.read_bytes()
    record = serialization.msgpack_restore(good)
    weights = bytearray(record["weights"])
    weights[-3] ^= 0x01  # one flipped bit in a weight
    file.write_bytes(serialization.msgpack_serialize({**record, "weights": bytes(weights)}))
    with pytest.raises(SpecError, match=f"{file}: checksum mismatch"):
        metaopt.load_optimizer(tmp_path)
    desc = record["description"].replace('"num_steps": 5', '"num_steps": 6')
    file.write_bytes(serialization.msgpack_serialize({**record, "description": desc}))
    with pytest.raises(SpecError, match="checksum mismatch"):  # the description is covered
        metaopt.describe_optimizer(tmp_path)
    file.write_bytes(good[: len(good) // 2])
    with pytest.raises(SpecError, match=f"{file}: not a readable optimizer file"):
        metaopt.load_optimizer(tmp_path)
    other = saved.save_optimizer(tmp_path / "x.msgpack", Spec("mlp_small"), _theta(),
                                 num_steps=5, feed_valid_loss=False)  # hidden 8 weights
    with pytest.raises(SpecError, match="weights do not fit mlp_small with the saved options"):
        metaopt.load_optimizer(other)


class Killed(BaseException):
    """A kill -9 at this point of the save."""


def test_a_kill_at_any_point_of_a_save_leaves_a_loadable_optimizer(tmp_path, monkeypatch):
    """Defect 4. The save of a run's optimizer is killed before each file-system mutation in
    turn; afterwards the run directory loads either the old or the new optimizer, bit for bit,
    never an error. Before 0.2 the weights were ``os.replace``-d into ``theta.msgpack`` and
    only then ``theta.sha256`` written: a kill between the two left a checksum mismatch."""
    from metaopt.train import artifacts, presets

    cfg = presets.get("smoke")
    old, new = _theta(cfg.lopt, 0), _theta(cfg.lopt, 1)
    artifacts.save_optimizer(tmp_path, cfg, old, step=1)
    real = {"replace": os.replace, "rename": os.rename, "fsync": os.fsync,
            "write_bytes": pathlib.Path.write_bytes, "write_text": pathlib.Path.write_text,
            "path_replace": pathlib.Path.replace}
    for kill_at in range(1, 20):
        calls = [0]

        def hook(name, kill_at=kill_at, calls=calls):
            def wrapped(*args, **kwargs):
                calls[0] += 1
                if calls[0] == kill_at:
                    raise Killed(name)
                return real[name](*args, **kwargs)
            return wrapped

        for name in ("replace", "rename", "fsync"):
            monkeypatch.setattr(os, name, hook(name))
        for name, attr in (("write_bytes", "write_bytes"), ("write_text", "write_text"),
                           ("path_replace", "replace")):
            monkeypatch.setattr(pathlib.Path, attr, hook(name))
        try:
            artifacts.save_optimizer(tmp_path, cfg, new, step=2)
            finished = True
        except Killed:
            finished = False
        monkeypatch.undo()
        _, theta = metaopt.load_optimizer(tmp_path)
        want = new if finished or saved.describe_optimizer(tmp_path).provenance[
            "outer_step"] == 2 else old
        for a, b in zip(jax.tree.leaves(theta), jax.tree.leaves(want), strict=True):
            np.testing.assert_array_equal(a, b)
        if finished:
            assert kill_at > 2  # the kill points were actually reached
            break
        artifacts.save_optimizer(tmp_path, cfg, old, step=1)  # back to the old one
    else:
        pytest.fail("the save never finished")


OLD_SHA = "574492de9cdb1c63d0d31be7a688a0d4ee28441dec4038c552cf5901b6ec3a90"  # theta.sha256


def test_pretrained_entry_kept_its_weights_and_describes_its_training():
    file = metaopt.pretrained.path("mlp_small_digits") / "optimizer.msgpack"
    assert hashlib.sha256(saved.read_weights(file)).hexdigest() == OLD_SHA
    desc = metaopt.describe_optimizer("mlp_small_digits")
    assert desc.lopt == lopt_lib.REGISTRY.spec("mlp_small")  # default options
    assert (desc.num_steps, desc.feed_valid_loss) == (200, False)
    assert desc.provenance["streams"] == 1 and "random streams" in desc.provenance["note"]
    cfg = desc.provenance["run_config"]
    assert cfg["schedule"] == {"name": "log_uniform", "min_length": 50, "max_length": 200}
    assert cfg["estimator"]["meta_loss"] == "train" and not cfg["inner"]["feed_valid_loss"]
    import tomllib

    data = tomllib.loads((pathlib.Path(__file__).parents[2] / "pyproject.toml").read_text())
    assert "pretrained/*/*" in data["tool"]["setuptools"]["package-data"]["metaopt"]


def _write_legacy(run_dir, theta, **cfg):
    """A run directory exactly as metaopt < 0.2 wrote it."""
    run_dir.mkdir()
    flat = {"task": "digits_mlp", "hidden": [32], "episode_length": 200, "meta_loss": "train",
            "lopt": "mlp_small", "estimator": "pes", "outer_steps": 10, "seed": 0, **cfg}
    (run_dir / "config.json").write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    data = serialization.to_bytes(theta)
    (run_dir / "theta.msgpack").write_bytes(data)
    (run_dir / "theta.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def test_pre_0_2_run_directories_still_load(tmp_path, capsys):
    theta = _theta(Spec("mlp_small"))
    _write_legacy(tmp_path / "old", theta, episode_length=150, meta_loss="valid")
    desc = metaopt.describe_optimizer(tmp_path / "old")
    assert desc.lopt == lopt_lib.REGISTRY.spec("mlp_small")
    assert (desc.num_steps, desc.feed_valid_loss) == (150, True)  # valid -> fed, as trained
    opt, loaded = metaopt.load_optimizer(tmp_path / "old")
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(theta), strict=True):
        np.testing.assert_array_equal(a, b)
    from metaopt.cli import main

    assert main(["train", "--resume", str(tmp_path / "old")]) == 2
    err = capsys.readouterr().err.strip()
    assert "metaopt < 0.2" in err and "cannot be resumed" in err and len(err.splitlines()) == 1
    # an old run killed between weights and checksum: one line saying how to convert it
    _write_legacy(tmp_path / "cut", theta)
    (tmp_path / "cut" / "theta.sha256").unlink()
    with pytest.raises(SpecError, match=r"without theta.sha256 .*python -m metaopt.io.legacy "
                                        r".*--trust-weights"):
        metaopt.load_optimizer(tmp_path / "cut")
    assert legacy.main([str(tmp_path / "cut"), "--trust-weights"]) == 0
    converted = tmp_path / "cut" / "optimizer.msgpack"
    assert saved.read_weights(converted) == (tmp_path / "cut" / "theta.msgpack").read_bytes()
    assert metaopt.describe_optimizer(tmp_path / "cut").num_steps == 200
