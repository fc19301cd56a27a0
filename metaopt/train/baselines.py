"""Hand-designed baselines at their best learning rate, and loss curves batched over optimizers.

A learned optimizer is compared with optax's SGD, momentum, Nesterov momentum (NAG), RMSprop
and Adam (:data:`OPTAX_BASELINES`), each at the learning rate of a log-spaced grid that
minimizes the final training loss on *tuning* task instances, then evaluated on held-out
instances (a different key). Everything runs through the library's inner problem
(:func:`metaopt.inner.inner_problem`), so a baseline and a learned optimizer train exactly the
same task instances with the same batches.

:func:`batched_curves` is the workhorse: for pairs ``(theta_p, key_p)`` (``thetas`` with a
leading axis ``[P]``: the learning rates of a grid, or the weights of learned optimizers) and
``optimizer_fn(theta) -> optax transform``, it trains ``num_tasks`` instances of ``task`` (drawn
by ``key_p``) for ``steps`` steps, all pairs in one compiled, vmapped unroll:

    loss[p, i, t] = L_train(w_t^{(p, i)}, batch_t^{(p, i)}),  w^{(p, i)} trained by
                    optimizer_fn(theta_p) from the instance i of key_p,

and ``diverged[p, i]`` flags a task that hit a non-finite loss (the inner problem resets such a
task, so its later losses are not a continuation; :func:`final_loss` counts it as ``inf``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from metaopt.inner import inner_problem, truncation

PyTree = Any

#: optax baselines by name: ``lr -> transform`` (momentum 0.9; RMSprop decay 0.9; Adam defaults).
OPTAX_BASELINES: dict[str, Callable[[jax.Array], optax.GradientTransformation]] = {
    "SGD": lambda lr: optax.sgd(lr),
    "momentum": lambda lr: optax.sgd(lr, momentum=0.9),
    "NAG": lambda lr: optax.sgd(lr, momentum=0.9, nesterov=True),
    "RMSprop": lambda lr: optax.rmsprop(lr),
    "Adam": lambda lr: optax.adam(lr),
}

#: The default learning-rate grid: 10^-4 ... 10^0.5 in half decades (10 values).
LR_GRID = tuple(float(x) for x in 10.0 ** np.arange(-4.0, 0.75, 0.5))


def batched_curves(task, optimizer_fn: Callable[[PyTree], optax.GradientTransformation],
                   thetas: PyTree, keys: jax.Array, steps: int, num_tasks: int,
                   compiler_options: dict | None = None) -> dict:
    """Training losses of ``num_tasks`` task instances for each pair ``(thetas[p], keys[p])``.

    Args:
      task: a Task or TaskFamily.
      optimizer_fn: ``theta -> optax transform`` (``theta`` one slice of ``thetas``).
      thetas: a pytree whose leaves have a leading axis ``[P]``.
      keys: ``[P]`` typed PRNG keys; key ``p`` draws the task instances and batches of run
        ``p`` (equal keys: the same instances and batches, whatever the theta).
      steps: inner steps per task.
      num_tasks: task instances per run.
      compiler_options: XLA options for the compilation (e.g. a lower optimization level).

    Returns numpy arrays ``{"loss": [P, num_tasks, steps], "diverged": [P, num_tasks]}``.
    One compilation per (task, optimizer_fn, P, steps, num_tasks).
    """
    if steps < 1 or num_tasks < 1:
        raise ValueError(f"steps, num_tasks: must be >= 1, got {steps}, {num_tasks}")
    n_theta = {x.shape[0] for x in jax.tree.leaves(thetas)}
    if n_theta != {keys.shape[0]}:
        raise ValueError(f"thetas: leading axes {sorted(n_theta)} must all equal the number "
                         f"of keys ({keys.shape[0]})")
    run = _compiled(task, optimizer_fn, steps, num_tasks, compiler_options)
    loss, diverged = run(keys, thetas)
    return {"loss": np.asarray(loss, np.float64), "diverged": np.asarray(diverged)}


def _compiled(task, optimizer_fn, steps: int, num_tasks: int, compiler_options):
    ip = inner_problem(task, optimizer_fn, schedule=truncation.constant(steps + 1), valid=False)

    def one(key, theta):
        states = ip.init_batch(key, theta, num_tasks)
        task_keys = jax.random.split(jax.random.fold_in(key, 1), num_tasks)
        _, out = ip.unroll_batch(task_keys, theta, states, steps)
        return out.loss, jnp.any(out.nonfinite | out.done, axis=-1)

    return jax.jit(jax.vmap(one), compiler_options=compiler_options)


def final_loss(loss: np.ndarray, diverged: np.ndarray, tail: float = 0.1) -> np.ndarray:
    """Mean training loss over the last ``tail`` fraction of the steps (at least one step),
    averaged over the task axis; ``inf`` where a task diverged. ``[..., tasks, steps] -> [...]``.
    """
    n = max(1, int(round(loss.shape[-1] * tail)))
    per_task = np.where(diverged, np.inf, np.mean(loss[..., -n:], axis=-1))
    return np.mean(per_task, axis=-1)


def switch_optimizer(makers: Sequence[Callable[[jax.Array], optax.GradientTransformation]]
                     ) -> Callable[[tuple], optax.GradientTransformation]:
    """``(index, lr) -> transform`` that applies member ``index`` of ``makers`` at ``lr``.

    Every member runs on the same gradients (each keeps its own state; the state is the tuple
    of all members' states) and the update of member ``index`` (an int32 scalar, possibly
    traced) is applied, so that one compiled unroll vmapped over ``(index, lr)`` pairs trains
    every baseline of a grid: a single compilation instead of one per optimizer. The other
    members' updates are computed and discarded (cheap elementwise work next to the gradient).
    """
    makers = tuple(makers)
    if not makers:
        raise ValueError("makers: needs at least one lr -> optax transform")

    def fn(theta):
        index, lr = theta
        members = [optax.with_extra_args_support(m(lr)) for m in makers]

        def init(params):
            return tuple(m.init(params) for m in members)

        def update(grads, state, params=None, **extra):
            outs = [m.update(grads, s, params, **extra)
                    for m, s in zip(members, state, strict=True)]
            chosen = jax.tree.map(lambda *u: jnp.stack(u)[index], *[o[0] for o in outs])
            return chosen, tuple(o[1] for o in outs)

        return optax.GradientTransformationExtraArgs(init, update)

    return fn


def tuned_baselines(task, steps: int, num_tasks: int, tune_key: jax.Array,
                    eval_keys: jax.Array, lrs: Sequence[float] = LR_GRID,
                    baselines: Mapping[str, Callable] | None = None,
                    compiler_options: dict | None = None) -> dict:
    """Each baseline at the grid learning rate with the lowest :func:`final_loss` on the
    instances of ``tune_key``, evaluated on those of each of ``eval_keys`` ([S]).

    All baselines and learning rates run as one vmapped unroll of :func:`switch_optimizer`:
    ``len(baselines) * len(lrs)`` pairs for tuning, ``len(baselines) * S`` for evaluation, the
    smaller call padded (by repeating its pairs) to the larger one's size, so that both share
    one compilation (on CPU a compilation costs more than a few extra unrolls).

    Returns ``{name: {"lr": best, "grid_final": [K] tuning finals, "loss": [S, tasks, steps],
    "diverged": [S, tasks]}}``.
    """
    baselines = dict(OPTAX_BASELINES if baselines is None else baselines)
    names, k, s = list(baselines), len(lrs), eval_keys.shape[0]
    fn = switch_optimizer([baselines[n] for n in names])
    size = len(names) * max(k, s)

    def curves(index, lr, keys):
        n = index.shape[0]
        pad = lambda x: jnp.concatenate([x] * -(-size // n))[:size]
        c = batched_curves(task, fn, (pad(index), pad(lr)), pad(keys), steps, num_tasks,
                           compiler_options)
        return {key: v[:n] for key, v in c.items()}

    ids = jnp.arange(len(names), dtype=jnp.int32)
    tune = curves(jnp.repeat(ids, k), jnp.tile(jnp.asarray(lrs, jnp.float32), len(names)),
                  jnp.stack([tune_key] * (len(names) * k)))
    tuning = final_loss(tune["loss"], tune["diverged"]).reshape(len(names), k)
    best = np.argmin(np.where(np.isnan(tuning), np.inf, tuning), axis=1)  # [baselines]
    best_lr = jnp.asarray([lrs[b] for b in best], jnp.float32)
    ev = curves(jnp.repeat(ids, s), jnp.repeat(best_lr, s),
                jnp.concatenate([eval_keys] * len(names)))
    return {n: {"lr": float(lrs[best[i]]), "grid_final": tuning[i].tolist(),
                "loss": ev["loss"][i * s:(i + 1) * s],
                "diverged": ev["diverged"][i * s:(i + 1) * s]}
            for i, n in enumerate(names)}
