"""Held-out evaluation: train tasks with a learned optimizer and with optax baselines.

For each task (a name in the task registry, default options), every optimizer trains the same
``seeds`` task instances (same init, same batches: one ``unroll_batch`` over seeds) for
``steps`` inner steps. Baselines: SGD at a fixed learning rate, Adam at its default 1e-3, and
Adam tuned over a log-spaced learning-rate grid (the best final training loss is reported; the
grid is the tuned baseline a learned optimizer must beat). Reported per optimizer: the final
training loss (mean of the last 10% of steps) and validation loss, as mean over seeds, and
their curves.

A saved learned optimizer is evaluated as it was meta-trained: its inner problems give it the
validation loss (the ``valid_loss`` extra arg) exactly when it was trained with it
(``feed_valid_loss`` of its description, :func:`saved_candidates`).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import tasks as tasks_lib
from metaopt.inner import inner_problem, truncation
from metaopt.io.saved import describe_optimizer, load_optimizer
from metaopt.spec import SpecError

ADAM_GRID = tuple(float(x) for x in np.logspace(-4, -1, 7))


class Candidate(NamedTuple):
    """An optimizer to evaluate and whether its inner problems feed it the validation loss."""

    optimizer: Any  # an optax transformation
    feed_valid_loss: bool = False


def check_tasks(names) -> list[str]:
    """``names`` if each is in the task registry (SpecError ``tasks`` otherwise)."""
    names = list(names)
    for name in names:
        if name not in tasks_lib.REGISTRY:
            raise SpecError("tasks", f"unknown task {name!r}; allowed values are "
                            f"{list(tasks_lib.REGISTRY.names())}")
    return names


def curves(task, optimizer, steps: int, seeds: int, seed: int = 1234, *,
           feed_valid_loss: bool = False) -> dict[str, np.ndarray]:
    """Train ``seeds`` instances of ``task`` with ``optimizer``; losses ``[seeds, steps]``.

    ``feed_valid_loss``: the optimizer receives the previous step's validation loss.
    """
    ip = inner_problem(task, optimizer, schedule=truncation.constant(steps + 1),
                       feed_valid_loss=feed_valid_loss)
    key = jax.random.key(seed)  # the same task instances and batches for every optimizer
    states = ip.init_batch(key, None, seeds)
    keys = jax.random.split(jax.random.fold_in(key, 1), seeds)
    _, out = jax.jit(ip.unroll_batch, static_argnums=3)(keys, None, states, steps)
    return {"train": np.asarray(out.loss), "valid": np.asarray(out.meta_loss)}


def saved_candidates(source) -> dict[str, Candidate]:
    """The learned optimizer saved at ``source`` (meta-trained) and its untrained start (when
    its provenance names the seed), each fed the validation loss as it was trained."""
    from metaopt.train.loop import run_keys

    saved = describe_optimizer(source)
    lopt, theta = load_optimizer(source)
    feed = saved.feed_valid_loss
    out = {f"{lopt.name} (meta-trained)": Candidate(lopt.optimizer(theta), feed)}
    seed, streams = saved.provenance.get("seed"), saved.provenance.get("streams")
    if isinstance(seed, int) and streams in (1, 2):
        key = run_keys(seed).theta if streams == 2 else jax.random.fold_in(jax.random.key(seed),
                                                                            0)
        out[f"{lopt.name} (untrained start)"] = Candidate(lopt.optimizer(lopt.init(key)), feed)
    return out


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


def evaluate(candidates: dict[str, Any], task_names, steps: int = 200, seeds: int = 5,
             sgd_lr: float = 0.1) -> dict:
    """Final losses of each named optimizer (a :class:`Candidate` or an optax transform) and
    of the baselines on each task."""
    results: dict[str, dict] = {}
    cands = {label: c if isinstance(c, Candidate) else Candidate(c)
             for label, c in candidates.items()}
    for name in check_tasks(task_names):
        task = tasks_lib.REGISTRY.make(name)
        runs = {label: curves(task, c.optimizer, steps, seeds, feed_valid_loss=c.feed_valid_loss)
                for label, c in cands.items()}
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
