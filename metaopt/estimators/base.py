"""The outer-gradient estimator contract and the pieces every estimator shares.

An :class:`Estimator` is a NamedTuple of two pure functions (optax style, DESIGN.md):

* ``init(key, theta) -> est_state``: the estimator's state, which owns the
  :class:`~metaopt.inner.InnerProblem`'s batched inner state (a leading task axis ``[B]``);
* ``estimate(key, theta, est_state) -> (grad, est_state, metrics)``: an estimate of
  ``d/dtheta E[meta-loss]`` with the pytree structure of ``theta``, the advanced state, and a
  dict of scalar metrics.

Both jit, and ``estimate`` runs whole truncations as one compiled ``lax.scan`` with batches
sampled in jit (no host round trip per inner step).

Meta-loss of one unroll of ``n`` steps of one task, from the per-step ``StepOut`` ``[n]``:

* ``"train"``: ``(1/n) sum_t L_train,t`` (``StepOut.loss``);
* ``"valid"``: ``(1/n) sum_t L_meta,t`` (``StepOut.meta_loss``; the problem must measure the
  validation loss, ``inner_problem(..., valid=True)``, so that this is the validation loss
  after each update);
* ``"last"``: ``L_meta,n-1``, the last step's ``StepOut.meta_loss``;
* ``"log_train"``: ``(1/n) sum_t log max(L_train,t, LOG_FLOOR)``: the training loss on a log
  scale, so that tasks whose losses live on different scales (a mixture of families) weigh
  alike -- a relative improvement counts the same everywhere (learned_optimization's task
  normalizers serve the same purpose); below :data:`LOG_FLOOR` nothing is rewarded.

All four are ``sum_t w_t v_t`` with fixed weights ``w`` [n] (:func:`step_weights`) over the
values ``v`` [B, n] (:func:`step_values`).

Non-finite losses (a task that blew up and was reset, ``StepOut.nonfinite``) never reach the
gradient: they are excluded with ``where`` on the values (never ``0 * nan``), the backprop
estimators drop the whole task's gradient for that unroll (reverse mode through a blown-up step
gives ``0 * inf = nan`` even behind a ``where``), and the antithetic ones drop the episode
segment that contained the blow-up (:mod:`.antithetic`). Losses that are huge but still finite
are legitimate values of the objective; bound their effect with the outer ``clip_norm``.

Metrics every estimator reports (float32 scalars): ``meta_loss`` (mean meta-loss over the
valid steps), ``inner_steps`` (inner updates run, each with one inner gradient),
``vjps`` / ``jvps`` (vector-Jacobian / Jacobian-vector products through an inner step taken
for the outer gradient), ``nonfinite_steps`` (steps dropped as non-finite) and
``masked_tasks`` (tasks or antithetic pairs with a dropped contribution); the antithetic ones
add ``restarted_tasks`` (pairs restarted after their halves desynchronized).

Data parallelism (``axis_name``): inside ``shard_map`` over a device axis, ``num_tasks`` is
the per-device count; per-task randomness is drawn for the whole batch and sliced per device
(:func:`per_task`), and the gradient is averaged over all devices' tasks, so ``D`` devices
compute what one device running ``D * num_tasks`` tasks computes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.inner import InnerProblem, StepOut, truncation
from metaopt.inner.core import theta_axes, tree_where  # noqa: F401  (re-exported for estimators)

PyTree = Any
META_LOSSES = ("train", "valid", "last", "log_train")
#: Losses below this floor count as the floor in the ``"log_train"`` meta-loss.
LOG_FLOOR = 1e-6
#: Metrics that are totals over tasks (summed across devices and mixture members); every
#: other metric is a mean.
COUNTERS = ("inner_steps", "vjps", "jvps", "nonfinite_steps", "masked_tasks", "restarted_tasks",
            "resets")


class Estimator(NamedTuple):
    """``init(key, theta) -> state``; ``estimate(key, theta, state) -> (grad, state, metrics)``."""

    init: Callable[[jax.Array, PyTree], PyTree]
    estimate: Callable[[jax.Array, PyTree, PyTree], tuple[PyTree, PyTree, dict[str, jax.Array]]]
    name: str = "estimator"


class NoState(NamedTuple):
    """The state of estimators that keep nothing between calls (full-episode ones)."""


# ----------------------------------------------------------------------------- validation


def check_problem(problem: object) -> InnerProblem:
    if not isinstance(problem, InnerProblem):
        raise TypeError(
            f"problem: expected a metaopt InnerProblem (inner_problem(...)), "
            f"got {type(problem).__name__}"
        )
    return problem


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: must be a positive integer (>= 1), got {value!r}")
    return value


def check_positive_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"{name}: must be a positive number (> 0), got {value!r}")
    return float(value)


def check_task_groups(task_groups: object, num_tasks: int) -> int | None:
    """``task_groups``: ``None`` (the default of :func:`task_groups_for`) or a positive int
    dividing ``num_tasks``."""
    if task_groups is None:
        return None
    task_groups = check_positive_int("task_groups", task_groups)
    if num_tasks % task_groups:
        raise ValueError(f"task_groups: must divide num_tasks={num_tasks}, got {task_groups}")
    return task_groups


def task_groups_for(task_groups: int | None, local_tasks: int) -> int:
    """Independent slices the reverse-mode estimators map their ``local_tasks`` tasks in per
    step (:func:`metaopt.inner.core.grouped_vmap`: the values of one ``vmap``).

    ``task_groups``, or by default 2 on the CPU backend when ``local_tasks`` is even and at
    least 4, else 1: XLA:CPU runs independent kernels at once, and most kernels of a reverse
    pass are too small to use both cores of a small machine alone (measured in
    ``scripts/results/issue16.md``; accelerators run one big kernel better).
    """
    if task_groups is not None:
        return task_groups
    cpu = jax.default_backend() == "cpu"
    return 2 if cpu and local_tasks >= 4 and local_tasks % 2 == 0 else 1


def check_meta_loss(meta_loss: str, problem: InnerProblem) -> str:
    if meta_loss not in META_LOSSES:
        raise ValueError(
            f"meta_loss: unknown value {meta_loss!r}; allowed values are {list(META_LOSSES)}"
        )
    if meta_loss == "valid" and not problem.valid:
        raise ValueError(
            "meta_loss: 'valid' weighs validation losses, but this problem does not measure "
            "them (inner_problem(..., valid=False)); allowed values here are "
            "['train', 'last', 'log_train']"
        )
    if meta_loss in ("train", "log_train") and not problem.has_train_loss:
        raise ValueError(
            f"meta_loss: {meta_loss!r} needs a training loss, and problem {problem.name!r} is "
            "given by its update map only (map_problem); allowed values here are ['valid', 'last']"
        )
    return meta_loss


def check_stagger(stagger: str) -> str:
    if stagger not in truncation.STAGGERS:
        raise ValueError(
            f"stagger: unknown value {stagger!r}; allowed values are {list(truncation.STAGGERS)}"
        )
    return stagger


# ----------------------------------------------------------------------------- meta-losses


def step_values(out: StepOut, meta_loss: str) -> jax.Array:
    """Per-step losses the meta-loss averages: ``[..., n]``."""
    if meta_loss == "log_train":
        return jnp.log(jnp.maximum(out.loss, jnp.asarray(LOG_FLOOR, out.loss.dtype)))
    return out.loss if meta_loss == "train" else out.meta_loss


def step_weights(meta_loss: str, n: int) -> np.ndarray:
    """Weights ``w`` [n] (float64 numpy constants, cast to the losses' dtype where used):
    ``1/n`` each for the means, one-hot at ``n - 1`` for ``"last"``."""
    if meta_loss == "last":
        return np.eye(n)[n - 1]
    return np.full((n,), 1.0 / n)


def finite_steps(out: StepOut, values: jax.Array) -> jax.Array:
    """``bool [..., n]``: the step's losses are finite (the task did not blow up there)."""
    return ~out.nonfinite & jnp.isfinite(values)


def weighted(values: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    """``sum_t w_t v_t`` over the steps where ``mask``; masked values never enter (no NaN)."""
    w = jnp.broadcast_to(jnp.asarray(weights, values.dtype), values.shape)
    return jnp.sum(jnp.where(mask, values, 0.0) * w, axis=-1)


def first_episode(done: jax.Array) -> jax.Array:
    """``bool [..., n]``: step ``t`` belongs to the episode running at the unroll's start.

    Step ``t`` with ``done_t`` is the last step of its episode (the reset happens after it), so
    ``t`` is in the first episode iff no ``done`` occurred at a step ``< t``.
    """
    d = done.astype(jnp.int32)
    return (jnp.cumsum(d, axis=-1) - d) == 0


def mean_meta_loss(values: jax.Array, weights: jax.Array, mask: jax.Array) -> jax.Array:
    """The metric ``meta_loss``: the weighted mean of ``values`` over the unmasked steps."""
    w = jnp.where(mask, jnp.broadcast_to(jnp.asarray(weights, values.dtype), values.shape), 0.0)
    return jnp.sum(jnp.where(mask, values, 0.0) * w) / jnp.maximum(jnp.sum(w), 1e-30)


def cost_metrics(tasks: int, steps: int, *, vjps: int = 0, jvps: int = 0) -> dict:
    """The cost counters, as float32 scalars (static numbers known at trace time)."""
    return {
        "inner_steps": jnp.asarray(float(tasks * steps), jnp.float32),
        "vjps": jnp.asarray(float(vjps), jnp.float32),
        "jvps": jnp.asarray(float(jvps), jnp.float32),
    }


# ----------------------------------------------------------------------------- pytrees


def broadcast(theta: PyTree, n: int) -> PyTree:
    """``theta`` with a new leading axis of size ``n`` (one copy per task)."""
    return jax.tree.map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), theta)


def masked_task_mean(grads: PyTree, ok: jax.Array, axis_name: str | None = None) -> PyTree:
    """``sum_i ok_i g_i / max(sum_i ok_i, 1)`` over the leading task axis; NaN-safe.

    With ``axis_name`` the sums run over the tasks of every device on that mapped axis.
    """
    count = jnp.sum(ok).astype(jnp.float32)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    count = jnp.maximum(count, 1.0)

    def mean(g):
        keep = ok.reshape(ok.shape + (1,) * (g.ndim - 1))
        total = jnp.sum(jnp.where(keep, g, 0.0), axis=0)
        if axis_name is not None:
            total = jax.lax.psum(total, axis_name)
        return (total / count).astype(g.dtype)

    return jax.tree.map(mean, grads)


def task_weights(ok: jax.Array, axis_name: str | None = None) -> jax.Array:
    """``w_i = ok_i / sum_j ok_j`` [B], the sum over the tasks of every device of
    ``axis_name``: the weights of a masked task mean."""
    count = jnp.sum(ok).astype(jnp.float32)
    if axis_name is not None:
        count = jax.lax.psum(count, axis_name)
    return ok.astype(jnp.float32) / jnp.maximum(count, 1.0)


def weighted_pullback(pull: Callable[[PyTree], tuple[PyTree]], grads: PyTree,
                      w: jax.Array) -> PyTree:
    """``pull(w * grads)[0]``: per-task gradients ``[B, ...]`` with respect to per-task
    contexts, weighted by ``w`` [B] and pulled back to theta with one VJP ``pull`` of the
    batched context (linear, so this is the weighted sum of the per-task pull-backs). Tasks
    with ``w_i = 0`` never enter (NaN-safe). Local to this device: ``psum`` the result over
    a device axis (outside any ``cond``)."""
    safe = tree_where(w > 0, grads, jax.tree.map(jnp.zeros_like, grads))
    return pull(scale_rows(w, safe))[0]


def task_mean(tree: PyTree, axis_name: str | None = None) -> PyTree:
    """Mean over the leading task axis (and over the devices of ``axis_name``)."""
    mean = jax.tree.map(lambda x: jnp.mean(x, axis=0), tree)
    return mean if axis_name is None else jax.lax.pmean(mean, axis_name)


def per_task(draw: Callable[[jax.Array, int], PyTree], key: jax.Array, n_local: int,
             axis_name: str | None) -> PyTree:
    """Per-task draws that do not depend on how the tasks are split over devices.

    ``draw(key, n)`` returns a pytree with a leading axis of ``n`` tasks (keys, perturbations,
    initial states). Without ``axis_name`` this is ``draw(key, n_local)``; inside a map over
    ``axis_name`` with ``D`` devices it draws for all ``D * n_local`` tasks and keeps this
    device's block, so that device ``d`` holds exactly tasks ``d * n_local ... (d + 1) *
    n_local - 1`` of a one-device run with ``D * n_local`` tasks (same randomness, same
    staggered starts).
    """
    if axis_name is None:
        return draw(key, n_local)
    size = jax.lax.axis_size(axis_name)
    start = jax.lax.axis_index(axis_name) * n_local
    full = draw(key, n_local * size)
    return jax.tree.map(lambda x: jax.lax.dynamic_slice_in_dim(x, start, n_local), full)


def split_keys(key: jax.Array, n_local: int, axis_name: str | None) -> jax.Array:
    """``jax.random.split(key, n)[block]``: one key per task (see :func:`per_task`)."""
    return per_task(jax.random.split, key, n_local, axis_name)


def check_axis_name(axis_name: object) -> str | None:
    if axis_name is not None and not (isinstance(axis_name, str) and axis_name):
        raise ValueError(f"axis_name: must be a non-empty string or None, got {axis_name!r}")
    return axis_name


def all_finite_per_task(grads: PyTree) -> jax.Array:
    """``bool [B]``: every entry of task ``i``'s gradient is finite."""
    leaves = [jnp.all(jnp.isfinite(g.reshape(g.shape[0], -1)), axis=1)
              for g in jax.tree.leaves(grads)]
    return jnp.all(jnp.stack(leaves), axis=0)


def gaussian_like(key: jax.Array, theta: PyTree, n: int, sigma: float) -> PyTree:
    """``n`` independent perturbations ``eps ~ N(0, sigma^2 I)`` shaped like ``theta``: [n, ...]."""
    leaves, treedef = jax.tree.flatten(theta)
    keys = jax.random.split(key, len(leaves))
    eps = [sigma * jax.random.normal(k, (n, *jnp.shape(x)), jnp.result_type(x))
           for k, x in zip(keys, leaves, strict=True)]
    return jax.tree.unflatten(treedef, eps)


def scale_rows(coef: jax.Array, tree: PyTree) -> PyTree:
    """``coef_i * tree_i`` for a per-row coefficient ``coef`` [n] and a tree of ``[n, ...]``."""
    return jax.tree.map(lambda x: coef.reshape(coef.shape + (1,) * (x.ndim - 1)) * x, tree)


def concat_pairs(a: PyTree, b: PyTree) -> PyTree:
    """Stack two ``[B, ...]`` trees into ``[2B, ...]`` (positive half first)."""
    return jax.tree.map(lambda x, y: jnp.concatenate([x, y], axis=0), a, b)


def split_pairs(tree: PyTree, n: int) -> tuple[PyTree, PyTree]:
    """Inverse of :func:`concat_pairs`."""
    return jax.tree.map(lambda x: x[:n], tree), jax.tree.map(lambda x: x[n:], tree)
