"""The command line: bad input exits 2 with one line naming the key and allowed values."""

import dataclasses

import pytest

from metaopt.cli import main
from metaopt.config import ConfigError, apply_overrides
from metaopt.train import presets
from metaopt.train.config import validate


@pytest.mark.parametrize("args, needle", [
    (["train", "nosuch"], "preset: unknown preset 'nosuch'; allowed values are"),
    (["train", "smoke", "bogus=1"], "bogus: unknown key; allowed keys are"),
    (["train", "smoke", "num_tasks=abc"], "num_tasks: expected an integer, got 'abc'"),
    (["train", "smoke", "truncation=31"], "truncation: must be <= episode_length (30)"),
    (["train", "smoke", "num_tasks=0"], "num_tasks: must be a positive integer, got 0"),
    (["train", "smoke", "estimator=sgd"], "estimator: unknown value 'sgd'; allowed values are"),
    (["train", "smoke", "lopt=nope"], "lopt: unknown value 'nope'; allowed values are"),
    (["train", "smoke", "devices=3"], "devices: must be in 0..1"),
    (["train", "smoke", "sigma=-1"], "sigma: must be a positive number"),
    (["plot", "/nonexistent/run"], "run_dir: /nonexistent/run has no metrics.jsonl"),
    (["eval", "/nonexistent/run", "--tasks", "imagenet"], "tasks: unknown value 'imagenet'"),
])
def test_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path):
    code = main([*args, "--run-dir", str(tmp_path)] if args[0] == "train" else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err


def test_task_count_must_divide_over_devices():
    cfg = dataclasses.replace(presets.PRESETS["smoke"], num_tasks=6, devices=4)
    with pytest.raises(ConfigError, match=r"num_tasks: 6 is not divisible by the device count 4"
                                          r"; allowed values are multiples of 4"):
        validate(cfg, ["mlp_small"], device_count=4)


def test_overrides_are_typed():
    cfg = apply_overrides(presets.PRESETS["smoke"],
                          ["hidden=8,4", "sigma=0.5", "outer_optimizer=self", "clip_norm=0"])
    assert cfg.hidden == (8, 4) and cfg.sigma == 0.5 and cfg.outer_optimizer == "self"
    assert cfg.clip_norm == 0.0
