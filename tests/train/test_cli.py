"""The command line: bad input exits 2 with one line naming the dotted key and what is allowed."""

import pytest

from metaopt.cli import main


@pytest.mark.parametrize("args, needle", [
    (["train", "nosuch"], "preset: unknown preset 'nosuch'; allowed values are"),
    (["train", "smoke", "bogus=1"], "bogus: unknown section; allowed sections are ['task',"),
    (["train", "smoke", "num_tasks=4"], "did you mean estimator.num_tasks?"),
    (["train", "smoke", "lopt.width=3"], "lopt.width: unknown option 'width'; allowed options "
                                         "are ['hidden'"),
    (["train", "smoke", "estimator.num_tasks=abc"], "estimator.num_tasks: expected an integer"),
    (["train", "smoke", "estimator.unroll_length=31"],
     "estimator.unroll_length: must be <= the longest episode of the schedule (30)"),
    (["train", "smoke", "estimator.num_tasks=0"], "estimator.num_tasks: must be a positive"),
    (["train", "smoke", "estimator.sigma=-1"], "estimator.sigma: must be a positive number"),
    (["train", "smoke", "estimator.sigma=inf"], "estimator.sigma: expected a finite number"),
    (["train", "smoke", "outer.learning_rate=nan"], "outer.learning_rate: expected a finite"),
    (["train", "smoke", "estimator=sgd"], "estimator.name: unknown estimator 'sgd'; allowed "
                                          "values are ['full_backprop'"),
    (["train", "smoke", "lopt.name=nope"], "lopt.name: unknown learned optimizer 'nope'"),
    (["train", "smoke", "outer.name=frozen"], "outer.source: required option missing"),
    (["train", "smoke", "outer.name=frozen", "outer.source=nowhere"],
     "outer.source: nowhere: neither a run directory, a saved optimizer file nor a "
     "pretrained name; allowed pretrained names are ['mlp_small_digits', 'norm_mlp_general']"),
    (["train", "smoke", "run.devices=3"], "run.devices: must be in 0..1"),
    (["train", "smoke", "run.keep=0"], "run.keep: must be a positive integer"),
    (["train", "smoke", "task.name=mixture"], "task: a mixture needs at least one member"),
    (["train", "smoke", "--eval", "--eval-tasks", "imagenet"], "tasks: unknown task 'imagenet'"),
    (["plot", "/nonexistent/run"], "run_dir: /nonexistent/run has no metrics.jsonl"),
    (["eval", "/nonexistent/run", "--tasks", "imagenet"], "tasks: unknown task 'imagenet'"),
    (["eval", "no_such_run_or_name"],
     "allowed pretrained names are ['mlp_small_digits', 'norm_mlp_general']"),
    (["train", "--resume", "/nonexistent/run"], "run_dir: /nonexistent/run is not a run "
                                                "directory (no config.json)"),
])
def test_bad_input_exits_2_with_one_line(args, needle, capsys, tmp_path):
    code = main([*args, "--run-dir", str(tmp_path / "r")]
                if args[0] == "train" and "--resume" not in args else args)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert needle in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "r").exists()  # refused before anything was written
