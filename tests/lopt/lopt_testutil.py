"""Helpers for the learned-optimizer tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from metaopt import tasks

#: Optimizers whose ``update`` needs ``loss=...`` (the rest need at most ``params``).
NEEDS_LOSS = ("hierarchical",)
#: The hand-designed (learnable-hyperparameter) optimizers of the registry.
HAND_DESIGNED = ("sgd", "momentum", "adam", "momentum_inverse_power")


def tiny_task() -> tasks.Task:
    """``y = tanh(x[:, :3])`` fitted by ``x W + b``.

    ``b`` starts at exactly zero and ``unused`` never gets a gradient (exact zeros), the cases
    where meta-gradients of ``sqrt``/``log``/``norm`` features turn NaN if written naively.
    """

    def init(key):
        return {"w": 0.3 * jax.random.normal(key, (4, 3)), "b": jnp.zeros((3,)),
                "unused": jnp.zeros((2,))}

    def batch(key, split):
        del split
        x = jax.random.normal(key, (8, 4))
        return {"x": x, "y": jnp.tanh(x[:, :3])}

    def loss(p, b, hparams=None):
        del hparams
        return jnp.mean((b["x"] @ p["w"] + p["b"][None, :] - b["y"]) ** 2)

    return tasks.Task(init=init, loss=loss, batch=batch, name="tiny_regression")


def extra_args(name: str, loss) -> dict:
    """The extra args a user must pass to ``name``'s update (only ``loss``, if any)."""
    return {"loss": loss} if name in NEEDS_LOSS else {}


def finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))
