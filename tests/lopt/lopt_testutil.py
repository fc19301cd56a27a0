"""Helpers for the learned-optimizer tests (imported by name: tests/ has no packages)."""

from __future__ import annotations

import jax
import jax.extend.core as jex
import jax.numpy as jnp

from metaopt import tasks

#: Optimizers whose ``update`` needs ``loss=...`` (the rest need at most ``params``).
NEEDS_LOSS = ("hierarchical",)
#: The hand-designed (learnable-hyperparameter) optimizers of the registry.
HAND_DESIGNED = ("sgd", "momentum", "adam", "momentum_inverse_power")


def tiny_task(dtype=jnp.float32) -> tasks.Task:
    """``y = tanh(x[:, :3])`` fitted by ``x W + b``, params and data of ``dtype``.

    ``b`` starts at exactly zero and ``unused`` never gets a gradient (exact zeros), the cases
    where meta-gradients of ``sqrt``/``log``/``norm`` features turn NaN if written naively.
    ``dtype=jnp.float64`` needs ``jax.enable_x64(True)`` around every use (tracing included).
    """

    def init(key):
        return {"w": 0.3 * jax.random.normal(key, (4, 3), dtype), "b": jnp.zeros((3,), dtype),
                "unused": jnp.zeros((2,), dtype)}

    def batch(key, split):
        del split
        x = jax.random.normal(key, (8, 4), dtype)
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


def cast(tree, dtype):
    """Every leaf of ``tree`` cast to ``dtype`` (float64 theta from ``init``'s float32)."""
    return jax.tree.map(lambda x: jnp.asarray(x).astype(dtype), tree)


def float_dtypes(fn, *args) -> dict[str, str]:
    """``{dtype: where}`` for every strongly typed float dtype in the jaxpr of ``fn(*args)``.

    Inputs, constants, outputs and every intermediate value at every nesting level (jit,
    scan, cond, custom_jvp bodies) are visited; ``where`` is the first equation producing or
    reading that dtype. Weakly typed scalars (Python constants) are skipped: they take the
    dtype of what they combine with. Tracing only, nothing is compiled.
    """
    found: dict[str, str] = {}

    def note(v, where):
        aval = getattr(v, "aval", None)
        dt = getattr(aval, "dtype", None)
        if (dt is not None and jnp.issubdtype(dt, jnp.floating) and not aval.weak_type
                and str(dt) not in found):
            found[str(dt)] = str(where)[:400]

    def walk(jaxpr):
        for v in (*jaxpr.invars, *jaxpr.constvars, *jaxpr.outvars):
            note(v, "an input, constant or output")
        for eqn in jaxpr.eqns:
            for v in (*eqn.invars, *eqn.outvars):
                note(v, eqn)
            for sub in jex.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


class CompileCounter:
    """Counts XLA backend compilations while active (``jax.monitoring`` events)::

        with CompileCounter() as compiles:
            f(x)
        assert compiles.count == 0
    """

    EVENT = "/jax/core/compile/backend_compile_duration"

    def __init__(self):
        self.count = 0

    def _listen(self, event, duration, **kwargs):
        del duration, kwargs
        if event == self.EVENT:
            self.count += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self._listen)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self._listen)
