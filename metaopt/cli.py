"""The ``metaopt`` command line.

* ``metaopt train PRESET [section.option=value ...] [--run-dir DIR] [--eval]`` /
  ``metaopt train --resume DIR [run.outer_steps=N]``
* ``metaopt eval SOURCE --tasks digits_mlp,...`` (a run directory, a saved file, a pretrained name)
  or ``metaopt eval SOURCE --suite heldout`` (a fixed suite, :mod:`metaopt.train.suites`)
* ``metaopt plot RUN_DIR``
* ``metaopt demo`` trains the digits MLP with an optax optimizer through the pure inner unroll.

Bad input (unknown preset, section, entry or option, wrong type, impossible or non-finite
value, an unloadable saved optimizer) exits with code 2 and a one-line message naming the
dotted key and what is allowed, without a traceback.
"""

from __future__ import annotations

import argparse
import sys

OPTAX_BASELINES = ("sgd", "momentum", "adam", "rmsprop")


def _build_optax(name: str, lr: float):
    import optax

    if name == "momentum":
        return optax.sgd(lr, momentum=0.9)
    return getattr(optax, name)(lr)


def cmd_demo(args: argparse.Namespace) -> int:
    import jax
    from tqdm import tqdm

    from metaopt import tasks
    from metaopt.inner import inner_problem, truncation
    from metaopt.spec import SpecError

    data = tasks.load_digits()
    try:
        task = tasks.mlp_classifier(data, hidden=tuple(args.hidden), batch_size=args.batch_size)
    except ValueError as err:
        raise SpecError(str(err).split(":")[0], str(err).split(": ", 1)[-1]) from None
    ip = inner_problem(task, _build_optax(args.optimizer, args.lr),
                       schedule=truncation.constant(args.steps + 1))
    state = ip.init(jax.random.key(args.seed), None)
    unroll = jax.jit(ip.unroll, static_argnums=3)
    key = jax.random.key(args.seed + 1)
    print(f"{task.name}: {args.optimizer}(lr={args.lr}), batch {args.batch_size}, "
          f"{args.steps} steps, seed {args.seed}")
    rows = []
    with tqdm(total=args.steps, unit="step", file=sys.stderr, disable=args.quiet) as bar:
        for start in range(0, args.steps, args.every):
            n = min(args.every, args.steps - start)
            key, sub = jax.random.split(key)
            state, out = unroll(sub, None, state, n)
            rows.append((start + n, float(out.loss.mean()), float(out.meta_loss.mean())))
            bar.update(n)
            bar.set_postfix(train=f"{rows[-1][1]:.3f}", valid=f"{rows[-1][2]:.3f}")
    print(f"{'step':>6}  {'train loss':>10}  {'valid loss':>10}")
    for step, tr, va in rows:
        print(f"{step:>6}  {tr:>10.4f}  {va:>10.4f}")
    test = tasks.evaluate(task, state.params, data, "test")
    print(f"test accuracy {test['accuracy']:.4f}  test loss {test['loss']:.4f}")
    return 0


def _default_run_dir(preset: str):
    """A new ``runs/PRESET-TIMESTAMP[-N]``, created here so that two runs started in the same
    second never share it."""
    import datetime
    import pathlib

    from metaopt.train import artifacts

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    artifacts.make_dir(pathlib.Path("runs"))
    for n in range(1, 10_000):
        run_dir = pathlib.Path(f"runs/{preset}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:
            continue
    raise FileExistsError(f"runs/{preset}-{stamp}")


def _start_processes(args: argparse.Namespace, devices: int) -> None:
    """The multi-host runtime and the CPU devices (before JAX starts); SpecError on bad
    values."""
    from metaopt import distributed
    from metaopt.spec import SpecError

    if devices < 0:
        raise SpecError("run.devices", f"must be >= 0 (0: every local device), got {devices}")
    try:
        multihost = distributed.initialize(args.coordinator, args.num_processes,
                                           args.process_id)
    except ValueError as err:
        field, _, rest = str(err).partition(": ")
        raise SpecError(field, rest) from None
    if devices != 1 and not multihost:  # CPU backend: the devices asked, 0: per core
        try:
            distributed.expose_cpu_devices(devices or distributed.available_cores())
        except RuntimeError:  # JAX already started (main() called in-process): validation
            pass  # still rejects a device count that this process does not have


def cmd_train(args: argparse.Namespace) -> int:
    import pathlib

    from metaopt.spec import SpecError
    from metaopt.train import artifacts

    if args.resume:
        if args.preset:
            raise SpecError("preset", "give either PRESET or --resume RUN_DIR, not both")
        run_dir = pathlib.Path(args.resume)
        artifacts.check_outside_package(run_dir)
        cfg = artifacts.read_config(run_dir)
    else:
        if not args.preset:
            raise SpecError("preset", "missing; usage: metaopt train PRESET [key=value ...]")
        from metaopt.train import presets

        cfg = presets.get(args.preset)
        run_dir = pathlib.Path(args.run_dir) if args.run_dir else None
        if run_dir is not None:
            artifacts.check_outside_package(run_dir)
    cfg = cfg.with_overrides(args.overrides)
    if args.eval:
        from metaopt.train.evaluate import check_tasks

        check_tasks(args.eval_tasks.split(","))
    _start_processes(args, cfg.run.devices)
    import jax

    from metaopt.train.build import validate
    from metaopt.train.loop import train

    validate(cfg)  # before the default run directory is created
    if run_dir is None:
        run_dir = _default_run_dir(args.preset)
    summary = train(cfg, run_dir, resume=bool(args.resume), progress=not args.quiet)
    last = summary["last_metrics"]
    if last:
        print(f"outer step {summary['step']}: meta_loss {last.get('meta_loss', float('nan')):.4f}"
              f", {last.get('inner_steps_per_s', 0):,.0f} inner steps/s ({summary['reason']})")
    if summary.get("signal"):  # interrupted: the conventional 128 + signal number
        return 128 + int(summary["signal"])
    if args.eval and summary["reason"] == "finished" and jax.process_index() == 0:
        from metaopt.train.plot import plot_run

        for path in plot_run(run_dir):
            print(f"wrote {path}")
        return _eval(run_dir, args.eval_tasks.split(","), args.eval_steps, args.eval_seeds,
                     run_dir / "eval")
    return 0


def _eval(source, task_names, steps: int, seeds: int, out_dir) -> int:
    from metaopt.train.evaluate import evaluate, saved_candidates, write_report

    results = evaluate(saved_candidates(source), task_names, steps=steps, seeds=seeds)
    print(write_report(results, out_dir, f"Evaluation of {source}"))
    print(f"wrote {out_dir}/eval.md, eval.json and eval_<task>.png")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    import pathlib

    from metaopt.io.saved import resolve
    from metaopt.train.evaluate import check_tasks

    if args.suite is None:
        task_names = check_tasks(args.tasks.split(","))
        if args.reuse_baselines:
            from metaopt.spec import SpecError

            raise SpecError("reuse_baselines", "only with --suite (it copies a suite "
                            "report's baseline columns)")
    file = resolve(args.run_dir)  # SpecError naming the source if there is nothing to load
    from metaopt.train.artifacts import PACKAGE, check_outside_package

    inside = PACKAGE in pathlib.Path(args.run_dir).resolve().parents
    if args.out:
        out_dir = pathlib.Path(args.out)
        check_outside_package(out_dir, "out")
    elif pathlib.Path(args.run_dir).is_dir() and not inside:
        out_dir = pathlib.Path(args.run_dir) / "eval"
    else:  # a pretrained name or a file: never write into the package
        out_dir = pathlib.Path("runs") / f"eval-{file.parent.name if file.is_file() else file.name}"
    if args.suite is not None:
        from metaopt.train.suite_cli import eval_suite

        return eval_suite(args.run_dir, args.suite, out_dir / args.suite, seeds=args.seeds,
                          max_steps=args.max_steps, baseline=args.baseline_pretrained,
                          tune_seeds=args.tune_seeds, reuse_baselines=args.reuse_baselines)
    return _eval(args.run_dir, task_names, args.steps, args.seeds, out_dir)


def cmd_plot(args: argparse.Namespace) -> int:
    import pathlib

    from metaopt.spec import SpecError
    from metaopt.train.plot import plot_run

    if not (pathlib.Path(args.run_dir) / "metrics.jsonl").exists():
        raise SpecError("run_dir", f"{args.run_dir} has no metrics.jsonl (not a run directory)")
    for path in plot_run(args.run_dir):
        print(path)
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="metaopt", description="Meta-optimization in JAX.")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the digits MLP with an optax optimizer")
    demo.add_argument("--optimizer", choices=OPTAX_BASELINES, default="adam")
    demo.add_argument("--lr", type=_positive_float, default=1e-2)
    demo.add_argument("--steps", type=_positive_int, default=500)
    demo.add_argument("--every", type=_positive_int, default=50, help="steps per printed row")
    demo.add_argument("--batch-size", type=_positive_int, default=128)
    demo.add_argument("--hidden", type=_positive_int, nargs="+", default=[32])
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="meta-train a learned optimizer from a preset")
    train.add_argument("preset", nargs="?", help="a preset name (metaopt/train/presets.py)")
    train.add_argument("overrides", nargs="*", metavar="key=value",
                       help="dotted overrides: lopt.hidden=64,64 estimator.sigma=0.01 "
                            "outer.learning_rate=1e-3 run.outer_steps=100 lopt=mlp ...")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--run-dir", help="where to write (default runs/PRESET-TIMESTAMP)")
    train.add_argument("--eval", action="store_true", help="evaluate on held-out tasks after")
    train.add_argument("--eval-tasks", default="digits_mlp,mlp_family")
    train.add_argument("--eval-steps", type=_positive_int, default=200)
    train.add_argument("--eval-seeds", type=_positive_int, default=5)
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--coordinator", help="multi-host: coordinator host:port "
                       "(or env METAOPT_COORDINATOR)")
    train.add_argument("--num-processes", type=_positive_int, help="multi-host: process count "
                       "(or env METAOPT_NUM_PROCESSES)")
    train.add_argument("--process-id", type=int, help="multi-host: this process's id "
                       "(or env METAOPT_PROCESS_ID)")
    train.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="train held-out tasks with a run's learned optimizer")
    ev.add_argument("run_dir", metavar="SOURCE",
                    help="a run directory, an optimizer.msgpack file or a pretrained name "
                         "(metaopt.pretrained.names())")
    ev.add_argument("--out", help="output folder (default RUN_DIR/eval, or runs/eval-NAME)")
    ev.add_argument("--tasks", default="digits_mlp,mlp_family",
                    help="comma-separated task registry names (metaopt.tasks.names())")
    ev.add_argument("--steps", type=_positive_int, default=200)
    ev.add_argument("--seeds", type=_positive_int, default=5)
    ev.add_argument("--suite", help="a fixed suite instead of --tasks: heldout or train "
                    "(metaopt.train.suites; writes OUT/SUITE/eval.md, eval.json, eval_curves.png)")
    ev.add_argument("--max-steps", type=_positive_int, help="--suite: cap every task's "
                    "budget (smoke runs)")
    ev.add_argument("--tune-seeds", type=_positive_int, default=1, help="--suite: task "
                    "instances the baselines' learning-rate grids are tuned on")
    ev.add_argument("--baseline-pretrained", default="mlp_small_digits", help="--suite: a "
                    "pretrained optimizer as a baseline column ('none': no such column)")
    ev.add_argument("--reuse-baselines", metavar="EVAL_JSON", help="--suite: copy the Adam, "
                    "SGD and baseline columns from an earlier eval.json of the same suite, "
                    "seeds and tuning instead of re-running them (checked; exit 2 otherwise)")
    ev.set_defaults(func=cmd_eval)

    plot = sub.add_parser("plot", help="write PNG curves of a run's metrics")
    plot.add_argument("run_dir")
    plot.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    from metaopt.spec import SpecError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # key=value overrides given after options land here
        if args.command != "train" or any("=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    if args.command == "train" and args.preset and "=" in args.preset:
        args.overrides, args.preset = [args.preset, *args.overrides], None
    from metaopt.train.loop import TrainingError

    try:
        return args.func(args)
    except SpecError as err:  # bad input found past argument parsing: one line, exit 2
        print(f"metaopt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except TrainingError as err:  # diverged, disk full: one line (with how to continue)
        print(f"metaopt {args.command}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
