"""Hypergradient memory and time: greedy (online, O(1) in T) vs RMD (full reverse mode).

One hypergradient of the validation loss after T steps of SGD (lr 0.1, batch 128) on the
digits MLP 64-32-10 with respect to per-example weights (alpha: 1,077 logits, the
hyper-cleaning setup), at T = 10, 100, 1000. Each configuration runs in its own process, so
``peak_mb`` is that process's peak resident memory (``VmHWM``, :func:`benchutil.peak_rss_mb`:
JAX runtime + compilation + buffers); ``xla_temp_mb`` is XLA's own count of the compiled
program's temporary buffers (the stored trajectory, for RMD); ``seconds`` is the best of
``--repeats`` timed calls after compilation.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
METHODS = ("greedy", "rmd")


def add_arguments(parser) -> None:
    parser.add_argument("--horizons", default="10,100,1000",
                        help="comma-separated inner horizons T")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, from {list(METHODS)}")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per configuration")


def _measure(method: str, horizon: int, repeats: int) -> dict:
    """Runs in the child process: build, compile, time one configuration."""
    sys.path.insert(0, str(ROOT))
    import jax
    import jax.numpy as jnp
    import optax
    from benchutil import peak_rss_mb

    from metaopt import hypergrad as hg
    from metaopt import tasks
    from metaopt.inner import inner_problem, truncation

    data = tasks.load_digits()
    task = tasks.mlp_classifier(data, hidden=(32,), batch_size=128)
    problem = inner_problem(task, optax.sgd(0.1), schedule=truncation.constant(horizon),
                            hparams_fn=lambda a: {"example_logits": a})
    est = hg.greedy(problem, gamma=0.9) if method == "greedy" else hg.rmd(problem)
    alpha = jnp.zeros((data.size("train"),))
    state = est.init(jax.random.key(0), alpha)
    compiled = jax.jit(est.estimate).lower(jax.random.key(0), alpha, state).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(jax.random.key(0), alpha, state))
    best = float("inf")
    for i in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(jax.random.key(i + 1), alpha, state))
        best = min(best, time.perf_counter() - t0)
    return {"peak_mb": round(peak_rss_mb(), 1), "seconds": round(best, 4),
            "xla_temp_mb": round(temp / 2**20, 2)}


def _child(method: str, horizon: int, repeats: int) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", method,
           str(horizon), str(repeats)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} T={horizon} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(args) -> dict:
    from benchutil import print_table

    horizons = [int(h) for h in args.horizons.split(",")]
    methods = [m.strip() for m in args.methods.split(",")]
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"methods: unknown method {m!r}; allowed values are {list(METHODS)}")
    result: dict = {m: {} for m in methods}
    rows = []
    for m in methods:
        for h in horizons:
            r = _child(m, h, args.repeats)
            result[m][str(h)] = r
            rows.append((m, h, r["peak_mb"], r["xla_temp_mb"], f"{r['seconds']:.4f}"))
    print_table(rows, ("method", "T", "peak MB (VmHWM)", "XLA temp MB", "s / hypergrad"))
    return result


if __name__ == "__main__" and len(sys.argv) == 5 and sys.argv[1] == "--child":
    print(json.dumps(_measure(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
