"""The ``metaopt`` command line.

``metaopt demo`` trains the digits MLP with an optax optimizer through the pure inner unroll
(truncations of one compiled ``lax.scan``) and prints its learning curve. Bad arguments exit
with code 2 and a one-line message.
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

    import tasks
    from metaopt.inner import inner_problem, truncation

    data = tasks.load_digits()
    task = tasks.mlp_classifier(data, hidden=tuple(args.hidden), batch_size=args.batch_size)
    ip = inner_problem(task, _build_optax(args.optimizer, args.lr),
                       schedule=truncation.constant(args.steps + 1), meta_loss="valid")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:  # bad input found past argument parsing: one line, exit 2
        print(f"metaopt {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
