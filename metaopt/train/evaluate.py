"""Held-out evaluation: train tasks with a learned optimizer and with optax baselines.

For each task, every optimizer trains the same ``seeds`` task instances (same init, same
batches: one ``unroll_batch`` over seeds) for ``steps`` inner steps. Baselines: SGD at a fixed
learning rate, Adam at its default 1e-3, and Adam tuned over a log-spaced learning-rate grid
(the best final training loss is reported; the grid is the tuned baseline a learned optimizer
must beat). Reported per optimizer: the final training loss (mean of the last 10% of steps)
and validation loss, as mean over seeds, and their curves.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import tasks as tasks_lib
from metaopt.inner import inner_problem, truncation

EVAL_TASKS = ("digits_mlp", "digits_cnn", "mlp_family", "quadratic")
ADAM_GRID = tuple(float(x) for x in np.logspace(-4, -1, 7))


def make_eval_task(name: str):
    if name not in EVAL_TASKS:
        raise ValueError(f"tasks: unknown eval task {name!r}; allowed values are "
                         f"{list(EVAL_TASKS)}")
    if name == "digits_mlp":
        return tasks_lib.mlp_classifier()
    if name == "digits_cnn":
        return tasks_lib.cnn_classifier()
    if name == "mlp_family":
        return tasks_lib.make("mlp_family")
    return tasks_lib.quadratic_family(dim=10)


def curves(task, optimizer, steps: int, seeds: int, seed: int = 1234) -> dict[str, np.ndarray]:
    """Train ``seeds`` instances of ``task`` with ``optimizer``; losses ``[seeds, steps]``."""
    ip = inner_problem(task, optimizer, schedule=truncation.constant(steps + 1))
    key = jax.random.key(seed)  # the same task instances and batches for every optimizer
    states = ip.init_batch(key, None, seeds)
    keys = jax.random.split(jax.random.fold_in(key, 1), seeds)
    _, out = jax.jit(ip.unroll_batch, static_argnums=3)(keys, None, states, steps)
    return {"train": np.asarray(out.loss), "valid": np.asarray(out.meta_loss)}


def adam_grid_curves(task, lrs, steps: int, seeds: int, seed: int = 1234) -> dict:
    """:func:`curves` of ``optax.adam(lr)`` for every ``lr`` in ``lrs``, vmapped over the
    learning rates in one compiled unroll (same task instances and batches as :func:`curves`).
    """
    ip = inner_problem(task, lambda lr: optax.adam(lr), schedule=truncation.constant(steps + 1))
    key = jax.random.key(seed)
    states = ip.init_batch(key, jnp.float32(1e-3), seeds)  # Adam's state does not read lr
    keys = jax.random.split(jax.random.fold_in(key, 1), seeds)
    run = jax.vmap(lambda lr: ip.unroll_batch(keys, lr, states, steps)[1])
    out = jax.jit(run)(jnp.asarray(lrs, jnp.float32))
    loss, valid = np.asarray(out.loss), np.asarray(out.meta_loss)
    return {lr: {"train": loss[i], "valid": valid[i]} for i, lr in enumerate(lrs)}


def _final(c: np.ndarray) -> float:
    tail = max(1, c.shape[1] // 10)
    return float(np.nanmean(c[:, -tail:]))


def evaluate(optimizers: dict[str, Any], task_names, steps: int = 200, seeds: int = 5,
             sgd_lr: float = 0.1) -> dict:
    """Final losses of each named optimizer and of the baselines on each task."""
    results: dict[str, dict] = {}
    for name in task_names:
        task = make_eval_task(name)
        runs = {label: curves(task, opt, steps, seeds) for label, opt in optimizers.items()}
        runs[f"sgd(lr={sgd_lr:g})"] = curves(task, optax.sgd(sgd_lr), steps, seeds)
        runs["adam(lr=1e-3)"] = curves(task, optax.adam(1e-3), steps, seeds)
        grid = adam_grid_curves(task, ADAM_GRID, steps, seeds)
        best = min(grid, key=lambda lr: _final(grid[lr]["train"]))
        runs[f"adam(best lr={best:.2g})"] = grid[best]
        results[name] = {
            label: {"final_train_loss": _final(c["train"]), "final_valid_loss": _final(c["valid"]),
                    "train_curve": np.nanmean(c["train"], 0).tolist(),
                    "valid_curve": np.nanmean(c["valid"], 0).tolist()}
            for label, c in runs.items()
        }
    return results


def write_report(results: dict, out_dir: pathlib.Path, title: str) -> str:
    """Write ``eval.json``, ``eval.md`` and one PNG of loss curves per task; return the table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(results, indent=1))
    lines = [f"# {title}", "", "| task | optimizer | final train loss | final valid loss |",
             "| --- | --- | --- | --- |"]
    for task, runs in results.items():
        for label, r in sorted(runs.items(), key=lambda kv: kv[1]["final_train_loss"]):
            lines.append(f"| {task} | {label} | {r['final_train_loss']:.4f} | "
                         f"{r['final_valid_loss']:.4f} |")
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, r in runs.items():
            ax.plot(r["train_curve"], label=label)
        ax.set(title=f"{task}: training loss (mean over seeds)", xlabel="inner step",
               ylabel="loss", yscale="log")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out_dir / f"eval_{task}.png", dpi=100)
        plt.close(fig)
    table = "\n".join(lines)
    (out_dir / "eval.md").write_text(table + "\n")
    return table
