"""Short-horizon bias (Wu, Ren, Liao & Grosse 2018), exactly on the NQM and on a digits MLP,
and which hypergradient estimators escape it.

(a) exact NQM, SGD: horizon-optimal schedules (Adam on the exact expected loss, rates
    piecewise linear in log-time between knots) for three horizons, and the greedy
    (one-step-optimal, closed form) schedule, with and without noise;
(b) the schedule a_k = a_0 (1 + k/K)^(-beta), momentum 0.9, tuned by its hypergradient at
    several horizons (exact NQM; digits MLP by full reverse mode), then run to the longest;
(c) equal compute: TBPTT, greedy (three gammas), PES over the same truncations and full RMD
    tuning that schedule for a long horizon (exact NQM; digits).

    .venv/bin/python -m experiments.short_horizon_bias.run [--smoke] [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import json
import pathlib
import time

import jax
import numpy as np

from experiments import hypergrad_common as common
from metaopt.lopt import schedules
from metaopt.tasks import nqm_schedules as ns

from . import digits_part as dp
from . import nqm_part as npt
from .report import plot, tables

GAMMAS = (0.9, 0.99, 0.999)

FULL = {
    "a_horizons": (100, 1000, 10000), "a_knots": 32, "a_steps": 200,
    "b_horizons": (100, 1000, 5000, 20000), "b_steps": 100, "b_lr": 0.05,
    "c_horizon": 1000, "c_truncation": 20, "c_tasks": 4, "c_episodes": 20, "c_lr": 0.05,
    "c_sigma": 0.1, "c_records": 10,
    "digits_hidden": (32, 32), "digits_batch": 32,
    "db_horizons": (100, 1000, 5000), "db_steps": 25, "db_lr": 0.1,
    "dc_horizon": 300, "dc_truncation": 15, "dc_tasks": 2, "dc_episodes": 15, "dc_lr": 0.05,
}
SMOKE = {
    **FULL, "a_horizons": (20, 200), "a_knots": 8, "a_steps": 40,
    "b_horizons": (20, 200), "b_steps": 40,
    "c_horizon": 60, "c_truncation": 10, "c_tasks": 2, "c_episodes": 2, "c_records": 2,
    "digits_hidden": (8,), "db_horizons": (10, 30), "db_steps": 2,
    "dc_horizon": 20, "dc_truncation": 10, "dc_tasks": 1, "dc_episodes": 1,
}


def theta_init() -> dict:
    return npt.theta_of(1.0, 100.0, 1.0)


def digits_theta_init() -> dict:
    return npt.theta_of(0.05, 100.0, 0.5)


def floats(theta: dict) -> dict:
    return {k: float(v) for k, v in theta.items()}


def part_c(problem, cfg_run: dict, horizon: int, truncation: int, tasks: int, episodes: int,
           lr: float, seeds: int, theta0: dict, evaluate, records: int, opts,
           deterministic: bool) -> dict:
    """Every estimator at ``episodes * horizon`` inner steps; final thetas and curves."""
    out = {}
    ests = npt.estimators_for(problem, truncation, tasks, horizon, GAMMAS, cfg_run["c_sigma"])
    for name, (estimator, cost) in ests.items():
        steps = max(episodes * horizon // cost, 1)
        n_seeds = 1 if deterministic and name != "PES" else seeds
        started = time.time()
        thetas, curve = npt.run_estimator(estimator, theta0, steps, lr, n_seeds,
                                          max(steps // records, 1), evaluate, opts)
        out[name] = {"outer_steps": steps, "inner_steps_per_outer": cost,
                     "thetas": [floats(jax.tree.map(lambda x, i=i: x[i], thetas))
                                for i in range(n_seeds)],
                     "curve": None if curve is None else curve.tolist(),
                     "seconds": round(time.time() - started, 1)}
        print(f"  {name}: {steps} outer steps, {out[name]['seconds']} s", flush=True)
    return out


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, "experiments/short_horizon_bias/results")
    parser.add_argument("--report", action="store_true",
                        help="only rebuild the table and figure from the saved JSON")
    args = parser.parse_args(argv)
    if args.seeds < 2 and not args.smoke:
        parser.error("--seeds: must be >= 2 for a confidence interval")
    out = pathlib.Path(args.out)
    if args.report:
        result = int_keys(json.loads((out / "short_horizon.json").read_text()))
        return write_report(result, out)
    c = SMOKE if args.smoke else FULL
    opts = common.FAST_COMPILE if args.smoke else None
    started = time.time()
    result = {"config": {k: list(v) if isinstance(v, tuple) else v for k, v in c.items()},
              "seeds": args.seeds, "smoke": args.smoke}

    # (a) exact NQM, SGD
    print("(a) horizon-optimal and greedy schedules", flush=True)
    result["a"] = {}
    for noise in (True, False):
        res = npt.part_a(c["a_horizons"], c["a_knots"], c["a_steps"], noise)
        result["a"]["noisy" if noise else "noiseless"] = res

    # (b) parametric schedule on the exact NQM
    print("(b) parametric schedule, exact NQM", flush=True)
    result["b_nqm"] = npt.part_b(c["b_horizons"], c["b_steps"], c["b_lr"])

    # (b) digits
    print("(b) parametric schedule, digits", flush=True)
    from metaopt import hypergrad as hg

    task, full_loss = dp.make_task(c["digits_hidden"], c["digits_batch"])
    long = max(c["db_horizons"])
    retrain = dp.retrainer(task, full_loss, long, args.seeds, opts)
    result["b_digits"] = {}
    for h in c["db_horizons"]:
        est = hg.rmd(dp.problem(task, h), num_tasks=1, horizon=h)
        thetas, _ = npt.run_estimator(est, digits_theta_init(), c["db_steps"], c["db_lr"], 1,
                                      c["db_steps"], None, opts)
        th = jax.tree.map(lambda x: x[0], thetas)
        result["b_digits"][h] = {**npt.describe(th, h, c["db_horizons"]), "theta": floats(th),
                                 "loss_at_long": np.asarray(retrain(th)).tolist()}
        print(f"  horizon {h}: {result['b_digits'][h]}", flush=True)

    # (c) estimators at equal compute, exact NQM
    print("(c) estimators, exact NQM", flush=True)
    h = c["c_horizon"]
    cfg = npt.config(True)
    bl = ns.nqm_schedule_bilevel(cfg, schedules.rate(npt.SCHEDULE), horizon=h,
                                 momentum=npt.MOMENTUM)
    evaluate = lambda th: npt.final_loss(cfg, th, h)  # noqa: E731
    result["c_nqm"] = part_c(bl, c, h, c["c_truncation"], c["c_tasks"], c["c_episodes"],
                             c["c_lr"], args.seeds, theta_init(), evaluate, c["c_records"],
                             opts, deterministic=True)
    result["c_nqm_start"] = float(evaluate(theta_init()))
    result["c_nqm_optimum"] = (result["b_nqm"][h] if h in result["b_nqm"]
                               else npt.part_b((h,), c["b_steps"], c["b_lr"])[h])

    # (c) digits
    print("(c) estimators, digits", flush=True)
    hd = c["dc_horizon"]
    result["c_digits"] = part_c(dp.problem(task, hd), c, hd, c["dc_truncation"], c["dc_tasks"],
                                c["dc_episodes"], c["dc_lr"], args.seeds, digits_theta_init(),
                                None, 1, opts, deterministic=False)
    retrain_c = dp.retrainer(task, full_loss, hd, args.seeds, opts)
    for res in result["c_digits"].values():
        res["loss_at_h"] = [np.asarray(retrain_c(th)).mean().item() for th in res["thetas"]]
    result["c_digits_start"] = np.asarray(retrain_c(digits_theta_init())).tolist()

    common.save(out, "short_horizon", result, "(report pending)", started)
    return write_report(int_keys(json.loads((out / "short_horizon.json").read_text())), out)


def int_keys(tree):
    """JSON turned the horizons (int keys) into strings: turn them back."""
    if isinstance(tree, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): int_keys(v)
                for k, v in tree.items()}
    if isinstance(tree, list):
        return [int_keys(v) for v in tree]
    return tree


def write_report(result: dict, out: pathlib.Path) -> dict:
    table = tables(result)
    (out / "short_horizon.md").write_text(table + "\n")
    print(table)
    plot(result, out / "short_horizon.png")
    return result


if __name__ == "__main__":
    main()
