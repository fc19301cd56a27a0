"""Meta-training throughput and peak memory of PES and TBPTT training a learned optimizer.

Configuration (issue 5): the per-parameter MLP learned optimizer (hidden 32 x 2,
``metaopt.lopt.mlp_lopt``) trained on the digits MLP 64-32-10 (batch 128), 16 tasks, truncations
of 50 steps, episodes of ``--horizon`` steps (constant schedule, staggered starts), meta-loss
the mean validation loss (``--meta-loss train``: training loss, no validation pass), outer
Adam (lr 1e-3, clip 1). One outer step is one jitted call: the whole truncation is
one compiled ``lax.scan`` with minibatches sampled in jit.

Throughput is ``tasks x inner steps per outer step / seconds per outer step`` after compile
(best of ``--repeats`` rounds, the estimators timed in turn within each round); PES counts each
antithetic pair once (it runs ``2 x 16`` inner tasks).
Devices (``--devices``, default 0): on a CPU-only machine, one CPU device per core with the
tasks split over them (``metaopt.distributed``, the data-parallel step of ``metaopt train``):
XLA:CPU runs one device's small batched operations mostly on one core, so this is what uses a
multi-core CPU; on an accelerator, all of them. ``--devices 1`` is the single-device figure.
The jitted step donates its input state (as ``metaopt train`` does), so XLA reuses the state's
buffers for the output instead of holding both. Peak memory (``VmHWM``, the peak resident
memory of a fresh process that builds, compiles and runs ``--memory-steps`` outer steps of one
configuration; :func:`benchutil.peak_rss_mb`) is reported at episode horizons 1,000 and
10,000 (on an accelerator also its allocator's peak, ``*_device_peak_mb_*`` in the JSON): PES
and TBPTT keep only the current truncation, so it should not grow with the horizon.

Usage: ``python scripts/bench.py meta-train [--tasks 16] [--unroll 50] [--skip-memory]
[--lopt mlp_small] [--estimators pes,pes_r1,nres,tbptt_step] [--devices 1]
[--schedule log_uniform]``. ``--estimators`` takes the variants of :data:`VARIANTS` (low-rank
PES ``pes_r1``..., NRES, TBPTT's remat policies ``tbptt_none``, ``tbptt_step``...).
``--schedule log_uniform`` draws episode lengths log-uniformly on ``[--min-length,
--max-length]`` (the memory runs then still use ``--horizon`` 1,000 / 10,000 as constants).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ESTIMATORS = ("pes", "tbptt")
#: Estimator variants: name -> (registry name, options). ``tbptt_*`` are its remat policies
#: and reverse-pass structures (``tbptt`` / ``tbptt_per_task_step``: the default, per-task
#: gradients with per-step remat; ``tbptt_per_task_none``: the default before issue 16; the
#: others take the reverse pass w.r.t. the shared theta; ``tbptt_groups1`` maps the tasks in
#: one ``vmap`` per step instead of the CPU default of two slices). ``full_backprop*``: exact
#: backprop through the first ``--unroll`` steps of fresh tasks (the default per-step remat,
#: no remat, per-step remat in one ``vmap``, chunks of 10 steps storing their activations or,
#: two-level, their steps' states).
VARIANTS = {
    "pes": ("pes", {}),
    "pes_r1": ("pes", {"rank": 1}),
    "pes_r2": ("pes", {"rank": 2}),
    "pes_r4": ("pes", {"rank": 4}),
    "nres": ("nres", {}),
    "nres_r1": ("nres", {"rank": 1}),
    "truncated_es": ("truncated_es", {}),
    "tbptt": ("tbptt", {}),
    "tbptt_none": ("tbptt", {"remat": "none", "shared_theta": True}),
    "tbptt_step": ("tbptt", {"remat": "step", "shared_theta": True}),
    "tbptt_step_dots": ("tbptt", {"remat": "step_dots", "shared_theta": True}),
    "tbptt_block10": ("tbptt", {"remat": "block", "block": 10, "shared_theta": True}),
    "tbptt_per_task_none": ("tbptt", {"remat": "none", "shared_theta": False}),
    "tbptt_per_task_step": ("tbptt", {"remat": "step", "shared_theta": False}),
    "tbptt_groups1": ("tbptt", {"task_groups": 1}),
    "full_backprop": ("full_backprop", {}),
    "full_backprop_none": ("full_backprop", {"remat": "none"}),
    "full_backprop_groups1": ("full_backprop", {"task_groups": 1}),
    "full_backprop_block10": ("full_backprop", {"checkpoint_every": 10, "remat": "none"}),
    "full_backprop_two_level10": ("full_backprop", {"checkpoint_every": 10}),
}
MEMORY_HORIZONS = (1000, 10000)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=16, help="tasks (PES: antithetic pairs)")
    parser.add_argument("--unroll", type=int, default=50, help="inner steps per truncation")
    parser.add_argument("--batch-size", type=int, default=128, help="digits minibatch size")
    parser.add_argument("--horizon", type=int, default=1000, help="episode length (throughput)")
    parser.add_argument("--sigma", type=float, default=0.01, help="PES perturbation scale")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (best is kept)")
    parser.add_argument("--inner", type=int, default=2, help="outer steps per timing repeat")
    parser.add_argument("--memory-steps", type=int, default=2, help="outer steps per memory run")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory processes")
    parser.add_argument("--memory-estimators", default=None,
                        help="comma-separated subset of --estimators to measure memory for "
                             "(default: all)")
    parser.add_argument("--meta-loss", default="valid", choices=("valid", "train"),
                        help="meta-loss: mean validation (default) or training loss")
    parser.add_argument("--lopt", default="mlp",
                        help="learned optimizer (metaopt.lopt registry name; mlp = 2 x 32)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help="comma-separated subset of " + ",".join(VARIANTS))
    add_schedule_arguments(parser)
    parser.add_argument("--devices", type=int, default=0,
                        help="devices the tasks are split over (0: one per CPU core, as many "
                             "as divide --tasks, on a CPU-only machine, else every "
                             "accelerator; 1: one device)")


def add_schedule_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--schedule", default="constant", choices=("constant", "log_uniform"),
                        help="episode lengths: constant --horizon, or log-uniform on "
                             "[--min-length, --max-length] (LO's benchmark: 100-10,000)")
    parser.add_argument("--min-length", type=int, default=100, help="log_uniform: shortest")
    parser.add_argument("--max-length", type=int, default=10000, help="log_uniform: longest")


def schedule_of(args, horizon: int):
    from metaopt.inner import truncation

    if getattr(args, "schedule", "constant") == "log_uniform":
        return truncation.log_uniform(args.min_length, args.max_length)
    return truncation.constant(horizon)


def setup_devices(args) -> int:
    """Expose the CPU devices (before JAX starts its backends); the device count to use."""
    import jax

    from metaopt import distributed

    if args.devices < 0:
        raise ValueError(f"devices: must be >= 0, got {args.devices}")
    cores = distributed.available_cores()
    count = args.devices or max(d for d in range(1, cores + 1) if args.tasks % d == 0)
    if count != 1:
        distributed.expose_cpu_devices(count)
    n = args.devices or (count if jax.default_backend() == "cpu" else jax.device_count())
    if n > jax.device_count() or args.tasks % n:
        raise ValueError(f"devices: {n} devices need a task count divisible by them (tasks "
                         f"{args.tasks}) and at most {jax.device_count()} devices")
    return n


def task_and_lopt(args):
    """``(task, learned optimizer)`` of the benchmark: the digits MLP 64-32-10 and ``--lopt``
    (``mlp``: the 2 x 32 per-parameter MLP)."""
    from metaopt import lopt, tasks

    task = tasks.mlp_classifier(hidden=(32,), batch_size=args.batch_size)
    return task, lopt.mlp_lopt(hidden=(32, 32)) if args.lopt == "mlp" else lopt.make(args.lopt)


def build(estimator: str, args, horizon: int, num_devices: int = 1):
    """``(jitted step, initial OuterState)`` of one configuration, the tasks split over
    ``num_devices`` devices (the same outer updates as one device)."""
    import jax
    import optax

    from metaopt import distributed, estimators
    from metaopt.inner import inner_problem
    from metaopt.outer import outer_trainer

    task, learned = task_and_lopt(args)
    problem = inner_problem(task, learned.optimizer, schedule=schedule_of(args, horizon),
                            valid=args.meta_loss != "train")
    registered, options = VARIANTS[estimator]
    lr = getattr(args, "lr", 1e-3)

    def trainer(num_tasks, axis_name=None):
        kwargs = dict(num_tasks=num_tasks, meta_loss=args.meta_loss, axis_name=axis_name,
                      **options)
        if registered == "full_backprop":  # fresh tasks, episodes cut at --unroll steps
            kwargs["horizon"] = args.unroll
        else:
            kwargs.update(unroll_length=args.unroll, stagger="even")
        if registered not in ("tbptt", "full_backprop"):
            kwargs["sigma"] = args.sigma
        est = estimators.make(registered, problem, **kwargs)
        return outer_trainer(est, optax.adam(lr), clip_norm=1.0, axis_name=axis_name)

    whole = trainer(args.tasks)
    state = jax.jit(whole.init)(jax.random.PRNGKey(0), learned.init(jax.random.PRNGKey(1)))
    if num_devices == 1:
        return jax.jit(whole.step, donate_argnums=1), state
    local = trainer(args.tasks // num_devices, distributed.AXIS)
    return distributed.data_parallel(local.step, state, num_devices, donate=True)


def compiled(estimator: str, args):
    """``(one, compile_s, metrics)``: ``one()`` runs one outer step of ``estimator`` (compiled
    by the first call, timed here)."""
    import jax

    step, state = build(estimator, args, args.horizon, args.num_devices)
    holder = {"state": state, "key": jax.random.PRNGKey(2)}

    def one():
        holder["key"], key = jax.random.split(holder["key"])
        holder["state"], metrics = step(key, holder["state"])
        return metrics

    t0 = time.perf_counter()
    metrics = jax.block_until_ready(one())  # compile + first step
    return one, time.perf_counter() - t0, metrics


def throughputs(names: list[str], args) -> dict:
    """Task-steps/s of each estimator: all compiled first, then ``--repeats`` rounds timing
    each in turn (``--inner`` outer steps), the best round kept -- interleaved, so that a
    shared machine's load drifts over all of them alike."""
    import jax

    runs = {n: compiled(n, args) for n in names}
    units = args.inner * args.tasks * args.unroll
    best = dict.fromkeys(names, 0.0)
    for _ in range(args.repeats):
        for name, (one, _, _) in runs.items():
            t0 = time.perf_counter()
            for _ in range(args.inner):
                jax.block_until_ready(one())
            best[name] = max(best[name], units / (time.perf_counter() - t0))
    return {n: {"task_steps_per_s": best[n], "s_per_outer_step": args.tasks * args.unroll
                / best[n], "compile_s": runs[n][1], "meta_loss": float(runs[n][2]["meta_loss"])}
            for n in names}


def peak_memory_mb(estimator: str, horizon: int, args) -> dict:
    """``{"peak_mb": peak RSS (MB)[, "device_peak_mb": accelerator peak]}`` of a fresh process
    running one configuration."""
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--worker", estimator,
           str(horizon), json.dumps(vars(args), default=str)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _worker(estimator: str, horizon: int, raw: str) -> None:
    import jax
    from benchutil import peak_rss_mb

    args = argparse.Namespace(**json.loads(raw))
    args.schedule = "constant"  # the memory runs: constant episodes of ``horizon`` steps
    step, state = build(estimator, args, horizon, setup_devices(args))
    for key in jax.random.split(jax.random.PRNGKey(2), args.memory_steps):
        state, metrics = step(key, state)
    jax.block_until_ready(metrics)
    result = {"peak_mb": peak_rss_mb()}
    stats = jax.devices()[0].memory_stats() or {}  # accelerators: the allocator's peak
    if "peak_bytes_in_use" in stats:
        result["device_peak_mb"] = stats["peak_bytes_in_use"] / 2**20
    print(json.dumps(result))


def run(args) -> dict:
    from benchutil import print_table

    names = [n for n in args.estimators.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"estimators: unknown {unknown}; allowed values are {list(VARIANTS)}")
    import jax

    args.num_devices = setup_devices(args)
    platform = jax.devices()[0].platform
    result, rows = {"devices": args.num_devices, "platform": platform}, []
    rates = throughputs(names, args)
    for name in names:
        t = rates[name]
        result[f"{name}_task_steps_per_s"] = round(t["task_steps_per_s"], 1)
        mem = {}
        measured = names if args.memory_estimators is None else args.memory_estimators.split(",")
        if not args.skip_memory and name in measured:
            for h in MEMORY_HORIZONS:
                peaks = peak_memory_mb(name, h, args)
                mem[h] = round(peaks["peak_mb"], 1)
                result[f"{name}_peak_mb_h{h}"] = mem[h]
                if "device_peak_mb" in peaks:
                    result[f"{name}_device_peak_mb_h{h}"] = round(peaks["device_peak_mb"], 1)
        rows.append((name, f"{t['task_steps_per_s']:.0f}", f"{t['s_per_outer_step']:.3f}",
                     f"{t['compile_s']:.1f}", f"{t['meta_loss']:.3f}",
                     *(mem.get(h, "-") for h in MEMORY_HORIZONS)))
    print(f"meta-train: lopt {args.lopt} on digits MLP 64-32-10, batch {args.batch_size}, "
          f"{args.tasks} tasks, truncation {args.unroll}, episodes "
          f"{schedule_of(args, args.horizon).name} (horizon {args.horizon}, log-uniform "
          f"{args.min_length}-{args.max_length}), "
          f"meta-loss {args.meta_loss}, {args.num_devices} {platform} device(s)")
    print_table(rows, ("estimator", "task-steps/s", "s/outer step", "compile s", "meta-loss",
                       *(f"peak MB h={h}" for h in MEMORY_HORIZONS)))
    return result


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        here = pathlib.Path(__file__).resolve().parent
        sys.path[:0] = [str(here), str(here.parent)]
        _worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        raise SystemExit("run through: python scripts/bench.py meta-train")
