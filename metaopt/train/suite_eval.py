"""Evaluate a learned optimizer on a fixed suite (:mod:`metaopt.train.suites`) against tuned
optax baselines: ``metaopt eval SOURCE --suite heldout``.

For every suite task, every optimizer trains the same ``seeds`` task instances (same inits,
same batches: one ``unroll_batch`` over seeds) for the task's budget. Columns:

* ``learned``: the optimizer at SOURCE, untuned; the inner problem gives it the task's budget
  (the ``num_steps`` extra arg is the episode length, budget + 1 so that the last step does not
  reset the task) and the validation loss exactly when it was meta-trained with it;
* ``adam_1e-3``: Adam at 1e-3;
* ``adam_tuned`` / ``sgdm_tuned``: Adam / SGD with momentum 0.9 at the best of :data:`GRID`
  (14 log-spaced learning rates, 1e-5 .. 1) by final training loss (:func:`select_best`) on
  ``tune_seeds`` separate tuning instances (default 1: the grids are 90% of the cost), then
  run on the evaluation seeds;
* ``baseline``: a previously shipped pretrained optimizer (default ``mlp_small_digits``).

The learning rate is a traced array: each grid is one ``vmap`` over learning rates of one
``vmap`` over seeds in one compiled ``lax.scan`` (the final Adam run vmaps the best rate and
1e-3), so a task costs six compiles. Per cell (mean over seeds): **final training loss** =
mean of the last 10% of steps (as :mod:`metaopt.train.evaluate`), **final validation loss**
likewise, the **test metric** (accuracy for classification tasks, else the loss) of the final
parameters on :data:`EVAL_BATCHES` test batches (the same for every optimizer), and
**diverged** = the number of seeds whose run diverged (:func:`diverged`). For the learned
optimizers also **late blow-up** (:func:`late_blowup`). :func:`summarize` gives the bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt import tasks as tasks_lib
from metaopt.inner import inner_problem, truncation
from metaopt.tasks.base import as_family

GRID = tuple(float(x) for x in np.logspace(-5, 0, 14))
ADAM_LR = 1e-3
DIVERGE_FACTOR = 2.0  # final training loss above this multiple of the initial loss: diverged
BLOWUP_FACTOR = 1.5  # final loss above this multiple of the lowest windowed loss: late blow-up
RESOLUTION = float(np.finfo(np.float32).eps)  # rises below this x |initial loss| are round-off
WITHIN_TUNED = 1.2  # the bar: learned final loss within this factor of tuned Adam's
EVAL_BATCHES = 16
TUNE_SEEDS, TUNE_SEED = 1, 4321  # task instances the learning-rate grids are tuned on
COLUMNS = ("learned", "adam_1e-3", "adam_tuned", "sgdm_tuned", "baseline")


class Learned(NamedTuple):
    """A learned optimizer to evaluate: ``optimizer(theta, num_steps=...)``, its ``theta``, and
    whether it reads the validation loss."""

    optimizer: Callable[..., Any]
    theta: Any
    feed_valid_loss: bool = False


# ----------------------------------------------------------------------------- pure metrics

def tail(steps: int) -> int:
    """Steps averaged for a final loss: the last 10% (at least one)."""
    return max(1, steps // 10)


def final_losses(train: np.ndarray) -> np.ndarray:
    """Final training loss per run: the mean of the last 10% of ``train`` ``[..., steps]``
    (NaN when any of those steps is non-finite)."""
    train = np.asarray(train, np.float64)
    return train[..., -tail(train.shape[-1]):].mean(-1)


def diverged(train: np.ndarray, nonfinite: np.ndarray | None = None) -> np.ndarray:
    """Per run ``[...]``: the loss turned non-finite at any step (the inner problem then resets
    the task, ``nonfinite``), or the final loss is not finite, or it exceeds
    :data:`DIVERGE_FACTOR` times the run's initial loss (its first step's)."""
    train = np.asarray(train, np.float64)
    final = final_losses(train)
    bad = ~np.isfinite(final) | ~np.isfinite(train).all(-1)
    with np.errstate(invalid="ignore"):
        bad |= final > DIVERGE_FACTOR * np.abs(train[..., 0])
    if nonfinite is not None:
        bad |= np.asarray(nonfinite).any(-1)
    return bad


def late_blowup(curve: np.ndarray) -> bool:
    """Whether the mean-over-seeds loss ``curve`` ``[steps]`` ends above :data:`BLOWUP_FACTOR`
    times the lowest loss it reached, both as means over windows of the final-loss length
    (10% of the steps), so that minibatch noise does not count as a blow-up.

    A rise smaller than the float32 resolution of the run's loss, ``eps_f32 * |curve[0]|``
    (:data:`RESOLUTION`; about 3e-7 for a 10-class cross-entropy starting at ln 10), is not a
    blow-up: a loss that has reached zero in float32 flickers between 0 and a few ulps
    (e.g. 0 and 1.9e-10 on the digits MLP), and any ratio of such values is noise.
    """
    c = np.asarray(curve, np.float64)
    if not np.isfinite(c).all():
        return True
    w = tail(len(c))
    windows = np.convolve(c, np.ones(w) / w, mode="valid")
    lowest = windows.min()
    return bool(windows[-1] > BLOWUP_FACTOR * lowest
                and windows[-1] - lowest > RESOLUTION * abs(c[0]))


def select_best(finals: np.ndarray, bad: np.ndarray) -> int:
    """Index of the best learning rate: the lowest mean final loss over seeds ``finals``
    ``[lrs, seeds]`` among those where no seed diverged (``bad``); if every one diverged
    somewhere, the lowest mean over the finite finals."""
    finals = np.asarray(finals, np.float64)
    score = np.where(np.asarray(bad).any(-1), np.inf, finals.mean(-1))
    if not np.isfinite(score).any():
        score = np.where(np.isfinite(finals), finals, np.inf).mean(-1)
    return int(np.argmin(score))


def summarize(results: dict, column: str = "learned") -> dict:
    """The bar of optimizer ``column`` over the tasks of ``results``: fraction of tasks where
    it beats Adam 1e-3 and where it is within :data:`WITHIN_TUNED` x tuned Adam's final
    training loss, and the numbers of tasks with a diverged seed and with a late blow-up."""
    rows = [r["optimizers"] for r in results.values() if column in r["optimizers"]]
    n = len(rows)

    def frac(pred):
        return sum(bool(pred(r)) for r in rows) / n if n else float("nan")

    return {
        "column": column, "tasks": n,
        "beats_adam_1e-3": frac(lambda r: _lt(r[column]["final_train_loss"],
                                              r["adam_1e-3"]["final_train_loss"])),
        "within_1.2x_tuned_adam": frac(lambda r: _lt(
            r[column]["final_train_loss"],
            WITHIN_TUNED * r["adam_tuned"]["final_train_loss"], strict=False)),
        "tasks_with_divergence": sum(r[column]["diverged"] > 0 for r in rows),
        "tasks_with_late_blowup": sum(bool(r[column].get("late_blowup")) for r in rows),
    }


def _lt(a: float, b: float, strict: bool = True) -> bool:
    if not math.isfinite(a):
        return False
    if not math.isfinite(b):
        return True
    return a < b if strict else a <= b


# ----------------------------------------------------------------------------- running

def runs(task, make_tx: Callable[[Any], Any], hp: Any, steps: int, seeds: int, *,
         grid: bool = False, seed: int = 1234, feed_valid_loss: bool = False) -> dict:
    """Train ``seeds`` instances of ``task`` with ``make_tx(hp)`` for ``steps`` steps in one
    compiled program; with ``grid``, ``hp`` has a leading axis that is vmapped over.

    Returns numpy ``train``, ``valid`` (losses ``[(H,) seeds, steps]``), ``nonfinite`` (the
    same shape, bool) and ``test`` (``[(H,) seeds]``, the test metric of the final
    parameters), with the same inits, batches and test batches for every optimizer.
    """
    family = as_family(task)
    ip = inner_problem(family, make_tx, schedule=truncation.constant(steps + 1),
                       feed_valid_loss=feed_valid_loss)
    key = jax.random.key(seed)
    keys = jax.random.split(jax.random.fold_in(key, 1), seeds)
    eval_keys = jax.random.split(jax.random.fold_in(key, 2), EVAL_BATCHES)

    def test_metric(cfg, params):
        t = family.task(cfg)
        objective = t.valid_loss or t.loss

        def one(k):
            b = t.batch(k, "test")
            m = t.metrics(params, b)
            return m["accuracy"] if "accuracy" in m else objective(params, b)

        return jnp.mean(jax.vmap(one)(eval_keys))

    def one(h):
        states = ip.init_batch(key, h, seeds)
        final, out = ip.unroll_batch(keys, h, states, steps)
        return (out.loss, out.meta_loss, out.nonfinite,
                jax.vmap(test_metric)(final.cfg, final.params))

    out = jax.jit(jax.vmap(one) if grid else one)(hp)
    return dict(zip(("train", "valid", "nonfinite", "test"), map(np.asarray, out), strict=True))


def is_classification(task) -> bool:
    """Whether the task's metrics include an accuracy (its test metric is then accuracy)."""
    t = as_family(task).task(as_family(task).sample(jax.random.key(0)))
    params = jax.eval_shape(t.init, jax.random.key(0))
    b = jax.eval_shape(lambda k: t.batch(k, "test"), jax.random.key(0))
    return "accuracy" in jax.eval_shape(t.metrics, params, b)


def cell(r: dict, select: Any = ()) -> dict:
    """One table cell from :func:`runs` output (``select``: the grid index, if any)."""
    train, valid = r["train"][select], r["valid"][select]
    return {"final_train_loss": float(np.nanmean(final_losses(train))),
            "final_valid_loss": float(np.nanmean(final_losses(valid))),
            "test_metric": float(np.nanmean(r["test"][select])),
            "diverged": int(diverged(train, r["nonfinite"][select]).sum()),
            "train_curve": np.nanmean(train, 0)}


BASELINE_COLUMNS = ("adam_1e-3", "adam_tuned", "sgdm_tuned")


def evaluate_task(task, steps: int, seeds: int, learned: dict[str, Learned],
                  tune_seeds: int = TUNE_SEEDS, reuse: dict | None = None) -> dict:
    """Every column of one task (``learned``: column name -> :class:`Learned`).

    Each grid is tuned on ``tune_seeds`` other task instances (seed :data:`TUNE_SEED`: no
    selection bias on the evaluation seeds); the best learning rate (and Adam's 1e-3) then
    trains the ``seeds`` evaluation instances every other column trains.

    ``reuse``: this task's entry of an earlier report of the same suite, seeds and tuning
    (checked by :func:`metaopt.train.suite_cli.load_reuse`): its Adam and SGD columns (and the
    columns of ``learned`` it also holds, e.g. ``"baseline"``) are copied instead of re-run --
    every run is deterministic in its seeds, so they would come out the same. Copied curves
    are the report's subsampled ones (``curve_stride``); their blow-up flag is recomputed on
    them.
    """
    out: dict[str, dict] = {}
    if reuse is not None:
        for col, o in reuse["optimizers"].items():
            if col in BASELINE_COLUMNS or (col in learned and col != "learned"):
                out[col] = {**o, "train_curve": np.asarray(o["train_curve"], np.float64)}
                if "late_blowup" in o:
                    out[col]["late_blowup"] = late_blowup(out[col]["train_curve"])
        learned = {c: lo for c, lo in learned.items() if c not in out}
    for col, lo in learned.items():
        r = runs(task, lambda th, lo=lo: lo.optimizer(th, num_steps=steps), lo.theta, steps,
                 seeds, feed_valid_loss=lo.feed_valid_loss)
        out[col] = cell(r)
        out[col]["late_blowup"] = late_blowup(out[col]["train_curve"])
    if reuse is not None:
        return {"initial_loss": reuse["initial_loss"], "optimizers": out}
    init_loss = None
    for col, make in (("adam", optax.adam), ("sgdm", lambda lr: optax.sgd(lr, momentum=0.9))):
        g = runs(task, make, jnp.asarray(GRID, jnp.float32), steps, tune_seeds, grid=True,
                 seed=TUNE_SEED)
        finals = final_losses(g["train"])
        best = select_best(finals, diverged(g["train"], g["nonfinite"]))
        lrs = (GRID[best], ADAM_LR) if col == "adam" else (GRID[best],)
        r = runs(task, make, jnp.asarray(lrs, jnp.float32), steps, seeds, grid=True)
        out[f"{col}_tuned"] = {**cell(r, 0), "lr": GRID[best],
                               "grid": dict(zip(GRID, map(float, finals.mean(-1)), strict=True))}
        if col == "adam":
            out["adam_1e-3"] = cell(r, 1)
        init_loss = float(np.mean(r["train"][0, :, 0]))
    return {"initial_loss": init_loss, "optimizers": out}


def evaluate_suite(suite, learned: dict[str, Learned], seeds: int = 5,
                   max_steps: int | None = None, tune_seeds: int = TUNE_SEEDS,
                   log: Callable[[str], None] = print, reuse: dict | None = None) -> dict:
    """:func:`evaluate_task` on every :class:`~metaopt.train.suites.SuiteTask` of ``suite``
    (budgets capped at ``max_steps``, for smoke runs); keyed by label. ``reuse``: label ->
    that task's entry of an earlier report (:func:`evaluate_task`)."""
    import time

    results = {}
    for entry in suite:
        start = time.perf_counter()
        task = tasks_lib.REGISTRY.make(entry.task)
        steps = min(entry.steps, max_steps or entry.steps)
        res = evaluate_task(task, steps, seeds, learned, tune_seeds,
                            None if reuse is None else reuse[entry.label])
        results[entry.label] = {
            "task": entry.task.to_json(), "steps": steps, "batch": entry.batch, "seeds": seeds,
            "metric": "test accuracy" if is_classification(task) else "test loss", **res,
            "wall_s": time.perf_counter() - start}
        log(f"{entry.label}: {steps} steps, {results[entry.label]['wall_s']:.1f} s")
    return results
