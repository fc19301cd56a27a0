"""Worker for test_hypergrad_devices.py: each hypergradient estimator's outer update on one
CPU device (all 8 tasks) and on 4 CPU devices (2 tasks each, ``distributed.data_parallel``),
3 outer steps from the same state; prints one JSON line of per-estimator differences."""

import json

import jax

jax.config.update("jax_num_cpu_devices", 4)

import numpy as np  # noqa: E402
import optax  # noqa: E402

from metaopt import distributed, lopt, tasks  # noqa: E402
from metaopt import hypergrad as hg  # noqa: E402
from metaopt.inner import inner_problem, truncation  # noqa: E402
from metaopt.outer import outer_trainer  # noqa: E402

TASKS, DEVICES = 8, 4
CASES = {"greedy": dict(gamma=0.9, unroll_length=4), "t1t2": dict(unroll_length=4),
         "ift": dict(num_terms=3), "fo": dict(unroll_length=4), "rmd": dict()}


def main():
    lo = lopt.make("momentum", learning_rate=0.05)
    problem = inner_problem(tasks.quadratic_family(dim=4), lo.optimizer,
                            schedule=truncation.constant(12))
    theta0 = lo.init(None)
    report = {"devices": jax.device_count()}
    for name, options in CASES.items():
        def trainer(num_tasks, axis_name=None, name=name, options=options):
            est = hg.make(name, problem, num_tasks=num_tasks, axis_name=axis_name, **options)
            return outer_trainer(est, optax.sgd(0.05), axis_name=axis_name)

        one = trainer(TASKS)
        state1 = one.init(jax.random.key(0), theta0)
        step1 = jax.jit(one.step)
        step4, state4 = distributed.data_parallel(trainer(TASKS // DEVICES, distributed.AXIS).step,
                                                  state1, DEVICES)
        losses = []
        for k in range(3):
            key = jax.random.key(10 + k)
            state1, m1 = step1(key, state1)
            state4, m4 = step4(key, state4)
            losses.append((float(m1["meta_loss"]), float(m4["meta_loss"])))
        t1, t4 = distributed.to_host(state1.theta), distributed.to_host(state4.theta)
        leaves = list(zip(jax.tree.leaves(t1), jax.tree.leaves(t4), jax.tree.leaves(theta0)))
        report[name] = {
            "theta_diff": max(float(np.max(np.abs(a - b))) for a, b, _ in leaves),
            "moved": max(float(np.max(np.abs(a - np.asarray(c)))) for a, _, c in leaves),
            "meta_loss": losses,
            "est_state_sharded": bool(all(len(x.sharding.device_set) == DEVICES
                                          for x in jax.tree.leaves(state4.est_state))),
        }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
