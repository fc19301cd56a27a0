"""Inner-unroll throughput: Adam on the digits MLP 64-32-10, batch 128, after compile.

Reports inner steps per second of one task and task-steps per second of 16 vmapped tasks,
each as whole truncations inside one compiled ``lax.scan`` with batches sampled in jit, and,
for scale, a bare JAX scan of SGD on the same model (hand-written, no metaopt) measured in the
same process. ``meta_loss="train"`` (the plain training step) gives the headline numbers; the
``valid`` rows add a validation-batch forward pass per step, as meta-training does.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax
from benchutil import best_rate, print_table

from metaopt import tasks
from metaopt.inner import inner_problem, truncation


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, default=2000, help="inner steps per timed call")
    parser.add_argument("--tasks", type=int, default=16, help="vmapped tasks")


def _bare_sgd_rate(data, steps: int) -> float:
    x, y = data.to_device().splits["train"]
    x = x.reshape(x.shape[0], -1)
    sizes = (64, 32, 10)
    keys = jax.random.split(jax.random.key(0), 2)
    params = [(jax.random.normal(k, (a, b)) / jnp.sqrt(a), jnp.zeros(b))
              for k, a, b in zip(keys, sizes[:-1], sizes[1:])]

    def loss(p, xb, yb):
        h = jax.nn.relu(xb @ p[0][0] + p[0][1]) @ p[1][0] + p[1][1]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(h), yb[:, None], 1))

    def step(p, k):
        idx = jax.random.randint(k, (128,), 0, x.shape[0])
        value, g = jax.value_and_grad(loss)(p, x[idx], y[idx])
        return jax.tree.map(lambda a, b: a - 0.1 * b, p, g), value

    run = jax.jit(lambda p, k: jax.lax.scan(step, p, jax.random.split(k, steps)))
    return best_rate(lambda: run(params, jax.random.key(1)), steps)


def run(args) -> dict:
    data = tasks.load_digits()
    task = tasks.mlp_classifier(data, hidden=(32,), batch_size=128)
    result, rows = {}, []
    for meta_loss in ("train", "valid"):
        ip = inner_problem(task, optax.adam(1e-3), schedule=truncation.constant(10**9),
                           valid=meta_loss == "valid")
        state = ip.init(jax.random.key(0), None)
        single = jax.jit(ip.unroll, static_argnums=3)
        r1 = best_rate(functools.partial(single, jax.random.key(1), None, state, args.steps),
                       args.steps)
        states = ip.init_batch(jax.random.key(0), None, args.tasks)
        keys = jax.random.split(jax.random.key(2), args.tasks)
        batched = jax.jit(ip.unroll_batch, static_argnums=3)
        n = max(args.steps // args.tasks, 50)
        rb = best_rate(functools.partial(batched, keys, None, states, n), n * args.tasks)
        rows += [(f"adam single task (meta_loss={meta_loss})", f"{r1:,.0f}"),
                 (f"adam {args.tasks} vmapped tasks (meta_loss={meta_loss})", f"{rb:,.0f}")]
        suffix = "" if meta_loss == "train" else "_valid"
        result[f"single_task_steps_per_s{suffix}"] = round(r1, 1)
        result[f"vmapped{args.tasks}_task_steps_per_s{suffix}"] = round(rb, 1)
    bare = _bare_sgd_rate(data, args.steps)
    rows.append(("bare jax scan of SGD (reference)", f"{bare:,.0f}"))
    result["bare_sgd_steps_per_s"] = round(bare, 1)
    result["device"] = jax.devices()[0].device_kind
    print_table(rows, ("configuration", "(task-)steps/s"))
    return result
