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
curve against wall-clock (the estimator's own ``meta_loss`` metric -- the mean training loss
of the truncation, over both halves for the antithetic ones -- smoothed by a trailing mean of
``--smooth`` outer steps; PNG), and the wall-clock at which the smoothed curve first reaches
the target: the smoothed meta-loss full-rank PES (the first estimator) ends its budget at.
By construction PES reaches it within its budget; ``null`` means not within the budget.

Usage: ``python scripts/bench.py time-to-target [--budget-s 90] [--estimators pes,nres]
[--out DIR]``; last line JSON.
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


def train_for(name: str, args) -> dict:
    import jax
    from bench_meta_train import build

    step, state = build(name, args, 10000, args.num_devices)
    keys = iter(jax.random.split(jax.random.PRNGKey(2), 1_000_000))
    t0 = time.perf_counter()
    state, metrics = step(next(keys), state)
    losses = [float(metrics["meta_loss"])]
    compile_s = time.perf_counter() - t0
    offset = compile_s if args.include_compile else 0.0
    times, t0 = [offset], time.perf_counter()
    while time.perf_counter() - t0 + offset < args.budget_s:
        state, metrics = step(next(keys), state)
        losses.append(float(metrics["meta_loss"]))  # blocks: one outer step per sample
        times.append(time.perf_counter() - t0 + offset)
    steps_after = len(times) - 1
    run_s = times[-1] - offset
    rate = steps_after * args.tasks * args.unroll / run_s if steps_after else float("nan")
    return {"times": np.asarray(times), "losses": np.asarray(losses), "compile_s": compile_s,
            "task_steps_per_s": rate, "outer_steps": len(times)}


def plot(runs: dict, target: float, path: pathlib.Path, args) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, r in runs.items():
        ax.plot(r["times"], r["smooth"], label=f"{name} ({r['task_steps_per_s']:.0f} t-s/s)")
    ax.axhline(target, color="k", ls=":", lw=1, label="target (PES's final)")
    ax.set_xlabel("wall-clock s" + (" (compile included)" if args.include_compile
                                     else " (after compile)"))
    ax.set_ylabel(f"meta-loss (train), trailing mean of {args.smooth} outer steps")
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
    runs = {}
    for name in names:
        runs[name] = train_for(name, args)
        runs[name]["smooth"] = smoothed(runs[name]["losses"], args.smooth)
        print(f"{name}: {runs[name]['outer_steps']} outer steps, "
              f"{runs[name]['task_steps_per_s']:.0f} task-steps/s", flush=True)
    ref = names[0]
    target = float(runs[ref]["smooth"][-1])
    result = {"budget_s": args.budget_s, "target_meta_loss": round(target, 4),
              "target_from": ref, "devices": args.num_devices}
    rows = []
    for name, r in runs.items():
        ttt = time_to(target, r["times"], r["smooth"])
        ratio = None if ttt is None else ttt / time_to(target, runs[ref]["times"],
                                                       runs[ref]["smooth"])
        result[name] = {"task_steps_per_s": round(r["task_steps_per_s"], 1),
                        "compile_s": round(r["compile_s"], 1), "outer_steps": r["outer_steps"],
                        "final_meta_loss": round(float(r["smooth"][-1]), 4),
                        "time_to_target_s": None if ttt is None else round(ttt, 1),
                        "time_ratio_vs_" + ref: None if ratio is None else round(ratio, 3)}
        rows.append((name, f"{r['task_steps_per_s']:.0f}", f"{r['compile_s']:.1f}",
                     r["outer_steps"], f"{r['smooth'][-1]:.4f}",
                     "-" if ttt is None else f"{ttt:.1f}",
                     "-" if ratio is None else f"{ratio:.2f}"))
    print(f"time-to-target: budget {args.budget_s:.0f} s per estimator, target {target:.4f} "
          f"(smoothed final meta-loss of {ref}), {args.num_devices} device(s)")
    print_table(rows, ("estimator", "task-steps/s", "compile s", "outer steps",
                       "final meta-loss", "time to target s", f"ratio vs {ref}"))
    if args.out:
        out = pathlib.Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot(runs, target, out / "time_to_target.png", args)
        curves = {n: {"t": np.round(r["times"], 2).tolist(),
                      "meta_loss": np.round(r["losses"], 5).tolist()} for n, r in runs.items()}
        (out / "time_to_target_curves.json").write_text(json.dumps(curves) + "\n")
        result["png"] = str(out / "time_to_target.png")
    return result
