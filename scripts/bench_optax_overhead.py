"""Learned optimizers as optax transforms: full training-step time relative to optax.adam.

For each registered learned optimizer (``metaopt.lopt.names()``) and two models -- the digits
MLP 64-32-10 (batch 128 of the bundled digits) and a synthetic MLP 784-1024-256-10 of about
1.07M parameters (batch 128) -- time one jitted training step (forward, backward,
``opt.update(grads, state, params, loss=loss)``, ``optax.apply_updates``) and divide by the
same step with ``optax.adam(1e-3)``. Measurements are interleaved (every round times Adam
right before each optimizer) and the best of all rounds is kept for each, so that load from
other processes on a shared machine affects all optimizers alike; the ratios are still noisy
there (run twice and compare).

Bar (issue 4): ``mlp_small`` <= 1.5x Adam's step time on the 1M-parameter MLP.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import flax.linen as nn
import jax
import optax
from benchutil import print_table

from metaopt import lopt, tasks

MODELS = ("digits", "mlp_1m")
BAR = ("mlp_small", "mlp_1m", 1.5)


class _MLP1M(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(1024)(x))
        x = nn.relu(nn.Dense(256)(x))
        return nn.Dense(10)(x)


def add_arguments(parser) -> None:
    parser.add_argument("--optimizers", nargs="*", default=None,
                        help="registry names, optionally with options as NAME:KEY=VALUE[,...] "
                             "(e.g. norm_mlp:orthogonalize=true); default: all of "
                             "metaopt.lopt.names() and norm_mlp:orthogonalize=true")
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=MODELS)
    parser.add_argument("--rounds", type=int, default=30, help="interleaved timing rounds")
    parser.add_argument("--seconds", type=float, default=0.05,
                        help="target duration of one measurement (sets its step count)")


def _problem(model: str):
    """``(loss_fn(params, x, y), params, x, y)`` for ``model``."""
    key = jax.random.PRNGKey(0)
    if model == "digits":
        task = tasks.mlp_classifier()
        batch = jax.jit(task.batch, static_argnums=1)(key, "train")
        return (lambda p, x, y: task.loss(p, {**batch, "x": x, "y": y}),
                task.init(key), batch["x"], batch["y"])
    net = _MLP1M()
    x = jax.random.normal(key, (128, 784))
    y = jax.random.randint(jax.random.PRNGKey(1), (128,), 0, 10)

    def loss(p, x, y):
        return optax.softmax_cross_entropy_with_integer_labels(
            net.apply({"params": p}, x), y).mean()

    return loss, net.init(key, x)["params"], x, y


def _step_fn(loss_fn, tx, params, x, y) -> Callable[[], object]:
    state = tx.init(params)

    @jax.jit
    def step(params, state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, state = tx.update(grads, state, params, loss=loss)
        return optax.apply_updates(params, updates), state, loss

    jax.block_until_ready(step(params, state, x, y))  # compile
    return lambda: step(params, state, x, y)


def _calibrate(fn, seconds: float) -> int:
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return max(1, min(200, int(seconds / max(time.perf_counter() - t0, 1e-6))))


def _time(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        out = fn()
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) / n


def _make(entry: str) -> lopt.LearnedOptimizer:
    """``NAME`` or ``NAME:KEY=VALUE,KEY=VALUE`` (values parsed as on the command line)."""
    name, _, opts = entry.partition(":")
    options = {}
    for item in filter(None, opts.split(",")):
        key, _, text = item.partition("=")
        options[key] = lopt.REGISTRY.parse(name, key, text)
    return lopt.make(name, **options)


def _measure(model: str, names: list[str], rounds: int, seconds: float) -> dict[str, float]:
    """Best-of-``rounds`` seconds per step for ``adam`` (optax) and each learned optimizer."""
    loss_fn, params, x, y = _problem(model)
    fns = {"optax.adam": _step_fn(loss_fn, optax.adam(1e-3), params, x, y)}
    for name in names:
        lo = _make(name)
        fns[name] = _step_fn(loss_fn, lo.optimizer(lo.init(jax.random.PRNGKey(0))), params, x, y)
    counts = {k: _calibrate(f, seconds) for k, f in fns.items()}
    best = {k: float("inf") for k in fns}
    ref = "optax.adam"
    for _ in range(rounds):
        for k in names:  # the reference runs right before every optimizer: same conditions
            best[ref] = min(best[ref], _time(fns[ref], counts[ref]))
            best[k] = min(best[k], _time(fns[k], counts[k]))
    return best


def run(args) -> dict:
    names = args.optimizers or [*lopt.names(), "norm_mlp:orthogonalize=true"]
    for n in names:
        _make(n)  # ValueError naming the allowed values for an unknown name
    times = {m: _measure(m, names, args.rounds, args.seconds) for m in args.models}
    result = {n: {m: round(times[m][n] / times[m]["optax.adam"], 3) for m in args.models}
              for n in names}
    rows = [("optax.adam", *(f"{1e3 * times[m]['optax.adam']:.3f} ms (1.00x)"
                             for m in args.models))]
    for n in names:
        rows.append((n, *(f"{1e3 * times[m][n]:.3f} ms ({result[n][m]:.2f}x)"
                          for m in args.models)))
    print(f"full training step (fwd + bwd + update), best of {args.rounds} interleaved rounds; "
          f"{jax.devices()[0].device_kind}, {jax.local_device_count()} device(s)")
    print_table(rows, ("optimizer", *args.models))
    name, model, bar = BAR
    if name in result and model in result[name]:
        ok = result[name][model] <= bar
        print(f"bar: {name} on {model} = {result[name][model]:.2f}x Adam "
              f"({'meets' if ok else 'MISSES'} <= {bar}x)")
    return result
