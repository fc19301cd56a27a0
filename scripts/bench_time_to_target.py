"""Time to a target meta-loss: meta-training speed as a user feels it.

Configuration (issue 16, learned_optimization's PES benchmark): the per-parameter MLP learned
optimizer (2 x 32) on the digits MLP 64-32-10 (batch 128), 16 tasks, truncations of 50 steps,
episodes log-uniform on 100-10,000 steps (staggered starts), meta-loss the mean training loss,
outer Adam (``--lr``, clip 1). Each estimator of ``--estimators`` (default: full-rank PES,
low-rank PES r=1 and r=4, NRES, TBPTT, truncated ES) meta-trains from the same theta with the
same keys for the same wall-clock budget (``--budget-s``, default 300 s each). The clock starts
after the first (compiling) call, whose time is reported separately (``--include-compile``
counts it, as a user waiting would; on a shared machine compile times vary too much).

Reported per estimator: task-steps/s (after compile, each pair counted once), the meta-loss
curve against wall-clock (PNG), and the wall-clock at which the curve first reaches the
target: the value full-rank PES (the first estimator) ends its budget at. By construction PES
reaches it within its budget; ``null`` means not within the budget. Two curves
(``--curve``):

* ``eval`` (default): the learned optimizer itself, measured every ``--eval-every-s`` seconds
  of training (the clock paused meanwhile) on the same ``--eval-tasks`` fresh digits-MLP tasks
  with the same batches: the mean training loss over ``--eval-steps`` steps of unperturbed
  ``theta`` (a deterministic function of theta), smoothed by a trailing mean of 3 evaluations;
* ``online``: the estimator's own ``meta_loss`` metric (the mean training loss of the
  truncation, over both halves for the antithetic ones) smoothed by a trailing mean of
  ``--smooth`` outer steps. Cheap, but with log-uniform episodes of up to 10,000 steps it
  mostly tracks where the 16 tasks are in their episodes, not theta (issue 16's first run:
  PES reached its own final level after 40 s of 300).

Usage: ``python scripts/bench.py time-to-target [--budget-s 90] [--estimators pes,nres]
[--curve online] [--out DIR]``; last line JSON.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np

DEFAULT_ESTIMATORS = ("pes", "pes_r1", "pes_r4", "nres", "tbptt", "truncated_es")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from bench_meta_train import VARIANTS

    parser.add_argument("--budget-s", type=float, default=300.0,
                        help="wall-clock seconds per estimator (compile included)")
    parser.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS),
                        help="comma-separated, the first sets the target; from "
                             + ",".join(VARIANTS))
    parser.add_argument("--tasks", type=int, default=16, help="tasks (ES: antithetic pairs)")
    parser.add_argument("--unroll", type=int, default=50, help="inner steps per truncation")
    parser.add_argument("--batch-size", type=int, default=128, help="digits minibatch size")
    parser.add_argument("--sigma", type=float, default=0.01, help="ES perturbation scale")
    parser.add_argument("--lr", type=float, default=1e-3, help="outer Adam learning rate")
    parser.add_argument("--smooth", type=int, default=20,
                        help="trailing mean over this many outer steps")
    parser.add_argument("--devices", type=int, default=1,
                        help="devices the tasks are split over (as meta-train; default 1)")
    parser.add_argument("--include-compile", action="store_true",
                        help="start the clock before the compiling first call (default: "
                             "after it; compile times are reported separately)")
    parser.add_argument("--curve", default="eval", choices=("eval", "online"),
                        help="meta-loss curve: fixed-task evaluations of theta (default) or "
                             "the estimator's own online meta-loss")
    parser.add_argument("--eval-every-s", type=float, default=15.0,
                        help="eval: seconds of training between evaluations")
    parser.add_argument("--eval-tasks", type=int, default=8, help="eval: fixed tasks")
    parser.add_argument("--eval-steps", type=int, default=500, help="eval: steps per task")
    parser.add_argument("--out", default=None,
                        help="folder for the PNG and the curves' JSON (default: none)")


def smoothed(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values (the first ones over what exists)."""
    c = np.cumsum(np.insert(values, 0, 0.0))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def time_to(target: float, times: np.ndarray, curve: np.ndarray) -> float | None:
    """The first time at which ``curve <= target`` (``None``: never)."""
    hit = np.nonzero(curve <= target)[0]
    return float(times[hit[0]]) if hit.size else None


def evaluator(args):
    """``theta -> mean training loss`` of ``--eval-tasks`` fresh digits-MLP tasks trained
    ``--eval-steps`` steps by the learned optimizer (the same tasks and batches every call)."""
    import jax
    import jax.numpy as jnp
    from bench_meta_train import task_and_lopt

    from metaopt.inner import inner_problem, truncation

    task, learned = task_and_lopt(args)
    problem = inner_problem(task, learned.optimizer,
                            schedule=truncation.constant(args.eval_steps), valid=False)
    k_init, k_run = jax.random.split(jax.random.PRNGKey(12345))

    @jax.jit
    def evaluate(theta):
        states = problem.init_batch(k_init, theta, args.eval_tasks)
        _, outs = problem.unroll_batch(jax.random.split(k_run, args.eval_tasks), theta,
                                       states, args.eval_steps)
        return jnp.mean(outs.loss)

    return lambda theta: float(evaluate(jax.device_get(theta)))


def train_for(name: str, args, evaluate=None) -> dict:
    """Meta-train ``name`` for the budget; with ``evaluate`` the curve is its value of theta
    every ``--eval-every-s`` s of training (the clock stopped while it runs), else the online
    meta-loss of every outer step."""
    import jax
    from bench_meta_train import build

    step, state = build(name, args, 10000, args.num_devices)
    keys = iter(jax.random.split(jax.random.PRNGKey(2), 1_000_000))
    if evaluate is not None:
        first = evaluate(state.theta)  # compiles the evaluation outside every clock
    t0 = time.perf_counter()
    state, metrics = step(next(keys), state)
    online = [float(metrics["meta_loss"])]
    compile_s = time.perf_counter() - t0
    offset = compile_s if args.include_compile else 0.0
    times, clock, outer = [offset], offset, 1
    evals, eval_times, next_eval = [], [], offset
    if evaluate is not None:
        evals, eval_times, next_eval = [first], [offset], offset + args.eval_every_s
    while clock < args.budget_s:
        t0 = time.perf_counter()
        state, metrics = step(next(keys), state)
        online.append(float(metrics["meta_loss"]))  # blocks: one outer step per sample
        clock += time.perf_counter() - t0
        times.append(clock)
        outer += 1
        if evaluate is not None and (clock >= next_eval or clock >= args.budget_s):
            evals.append(evaluate(state.theta))
            eval_times.append(clock)
            next_eval = clock + args.eval_every_s
    run_s = clock - offset
    rate = (outer - 1) * args.tasks * args.unroll / run_s if outer > 1 else float("nan")
    result = {"times": np.asarray(times), "online": np.asarray(online), "compile_s": compile_s,
              "task_steps_per_s": rate, "outer_steps": outer}
    if evaluate is None:
        result.update(curve_t=result["times"], curve=smoothed(result["online"], args.smooth))
    else:
        result.update(curve_t=np.asarray(eval_times), evals=np.asarray(evals),
                      curve=smoothed(np.asarray(evals), 3))
    return result


def plot(runs: dict, target: float, path: pathlib.Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in runs.items():
        ax.plot(r["curve_t"], r["curve"], label=f"{name} ({r['task_steps_per_s']:.0f} t-s/s)")
    ax.axhline(target, color="k", ls=":", lw=1, label="target (PES's final)")
    ax.set_xlabel("wall-clock s" + (" (compile included)" if args.include_compile
                                     else " (after compile)"))
    ax.set_ylabel(f"mean training loss of {args.eval_tasks} fixed tasks x {args.eval_steps} "
                  "steps (3-eval mean)" if args.curve == "eval" else
                  f"online meta-loss (train), trailing mean of {args.smooth} outer steps")
    ax.set_title("time to target: MLP lopt on digits MLP, 16 tasks, T=50, log-uniform 100-10k")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> dict:
    from bench_meta_train import VARIANTS, setup_devices
    from benchutil import print_table

    names = [n for n in args.estimators.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown or not names:
        raise ValueError(f"estimators: unknown {unknown or names}; allowed values are "
                         f"{list(VARIANTS)}")
    if not args.budget_s > 0:
        raise ValueError(f"budget-s: must be > 0, got {args.budget_s}")
    args.meta_loss, args.schedule = "train", "log_uniform"
    args.min_length, args.max_length, args.lopt = 100, 10000, "mlp"
    args.num_devices = setup_devices(args)
    if args.curve == "eval" and not (args.eval_every_s > 0 and args.eval_tasks > 0
                                     and args.eval_steps > 0):
        raise ValueError("eval-every-s, eval-tasks, eval-steps: must be > 0, got "
                         f"{args.eval_every_s}, {args.eval_tasks}, {args.eval_steps}")
    evaluate = evaluator(args) if args.curve == "eval" else None
    runs = {}
    for name in names:
        runs[name] = train_for(name, args, evaluate)
        print(f"{name}: {runs[name]['outer_steps']} outer steps, "
              f"{runs[name]['task_steps_per_s']:.0f} task-steps/s, final "
              f"{runs[name]['curve'][-1]:.4f}", flush=True)
    ref = names[0]
    target = float(runs[ref]["curve"][-1])
    result = {"budget_s": args.budget_s, "curve": args.curve,
              "target_meta_loss": round(target, 4), "target_from": ref,
              "devices": args.num_devices}
    rows = []
    for name, r in runs.items():
        ttt = time_to(target, r["curve_t"], r["curve"])
        ratio = None if ttt is None else ttt / time_to(target, runs[ref]["curve_t"],
                                                       runs[ref]["curve"])
        result[name] = {"task_steps_per_s": round(r["task_steps_per_s"], 1),
                        "compile_s": round(r["compile_s"], 1), "outer_steps": r["outer_steps"],
                        "final_meta_loss": round(float(r["curve"][-1]), 4),
                        "time_to_target_s": None if ttt is None else round(ttt, 1),
                        "time_ratio_vs_" + ref: None if ratio is None else round(ratio, 3)}
        rows.append((name, f"{r['task_steps_per_s']:.0f}", f"{r['compile_s']:.1f}",
                     r["outer_steps"], f"{r['curve'][-1]:.4f}",
                     "-" if ttt is None else f"{ttt:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}"))
    print(f"time-to-target: budget {args.budget_s:.0f} s per estimator, curve {args.curve}, "
          f"target {target:.4f} (final value of {ref}), {args.num_devices} device(s)")
    print_table(rows, ("estimator", "task-steps/s", "compile s", "outer steps",
                       "final meta-loss", "time to target s", f"ratio vs {ref}"))
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot(runs, target, out / "time_to_target.png", args)
        curves = {n: {"t": np.round(r["times"], 2).tolist(),
                      "meta_loss": np.round(r["online"], 5).tolist(),
                      **({"eval_t": np.round(r["curve_t"], 2).tolist(),
                          "eval": np.round(r["evals"], 5).tolist()} if "evals" in r else {})}
                  for n, r in runs.items()}
        (out / "time_to_target_curves.json").write_text(json.dumps(curves) + "\n")
        result["png"] = str(out / "time_to_target.png")
    return result
