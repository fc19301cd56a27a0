"""The learned-optimizer contract and the helpers every optimizer in this package shares.

A learned optimizer (DESIGN.md, "The inner optimizer contract is optax") is the pair

    init(key) -> theta                                 # a pytree of float32 arrays
    optimizer(theta, **static) -> optax.GradientTransformationExtraArgs

so that ``lopt.optimizer(theta)`` *is* an optax optimizer: it composes with ``optax.chain``,
checkpoints with orbax, and runs in the inner problem or in a plain user loop.

Dtypes (optax's convention: state follows the parameters): ``init`` returns float32 theta;
a theta cast to another float dtype is used as given (never cast down). The optimizer state
of a parameter tensor has the tensor's dtype, at least float32 (:func:`state_dtype`; the
hand-designed optimizers of :mod:`.hparam` keep exactly the parameter dtype, like
``optax.sgd``/``optax.adam``), and the update is computed in the promotion of the state and
theta dtypes (:func:`compute_dtype`) and returned in each parameter's dtype. So float32
parameters and theta give a float32 program; float64 parameters and theta (under
``jax.enable_x64(True)``) a float64 program -- features, statistics, networks, recurrent
state, step embedding and meta-gradient -- with no float32 round trip.

``optimizer(theta, num_steps=...)``: ``num_steps`` (the default step budget) may be a Python
int or an integer array, traced or not (:func:`check_num_steps`), so that
``optax.inject_hyperparams(lo.optimizer)(theta, num_steps=T)`` works. What optax does with
the two arguments: ``num_steps`` (an int, also when left at its default) becomes a weakly
typed int32 array ``state.hyperparams["num_steps"]``, passed back as a traced array to
``optimizer(theta, num_steps=...)`` on every update; set it between updates with a Python int
(``state.hyperparams["num_steps"] = 500``: same jit signature, no recompilation). ``theta``,
a dict, is neither a number nor a callable to optax, so it is *not* a hyperparameter: it is
passed through unchanged to every call (not stored in the state, not cast to the
parameters' dtype by ``hyperparam_dtype``, and differentiable as usual).

Extra arguments of ``update(grads, state, params, **extra)`` (all optional unless an optimizer
says otherwise; unknown ones are ignored, as ``optax.chain`` forwards every extra arg to every
member):

* ``loss``: training loss of the current batch, a float scalar.
* ``iteration``: int32[], the step within the episode (``k``). Preferred over the optimizer's
  internal step count, because the inner problem staggers tasks' starts.
* ``num_steps``: int32[], the episode length (the step budget ``T``); when absent, the static
  ``num_steps`` given to ``optimizer(theta, num_steps=...)`` (default :data:`DEFAULT_NUM_STEPS`).
* ``valid_loss``: a float scalar, the latest validation loss.

An optimizer that *needs* an extra arg raises :class:`MissingExtraArgError` (a ``ValueError``)
naming it, e.g. ``hierarchical: pass loss=<training loss> to update(...)``.

Numerics for meta-gradients (EXAMPLES.md, practice 12): positive metaparameters are stored as
logs, decays as logits, square roots of quantities that may be exactly zero go through
:func:`safe_sqrt` / eps-inside-sqrt, so that d(update)/d(theta) is finite at zero gradients.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any

#: Step budget ``T`` assumed when neither the ``num_steps`` extra arg nor the static
#: ``optimizer(theta, num_steps=...)`` is given.
DEFAULT_NUM_STEPS = 1000

#: Descriptions used in :class:`MissingExtraArgError` messages.
EXTRA_ARGS = {
    "loss": "training loss",
    "iteration": "int32 step within the episode",
    "num_steps": "int32 episode length",
    "valid_loss": "validation loss",
    "params": "current parameters",
}



class LearnedOptimizer(NamedTuple):
    """A learned optimizer: ``init(key) -> theta``; ``optimizer(theta, **static) -> optax``.

    ``optax.inject_hyperparams(lo.optimizer)(theta, num_steps=T)`` is supported (module
    docstring): ``num_steps`` becomes ``state.hyperparams["num_steps"]``, theta is passed
    through as given.
    """

    init: Callable[[jax.Array], PyTree]
    optimizer: Callable[..., optax.GradientTransformationExtraArgs]
    name: str


class MissingExtraArgError(ValueError):
    """``update`` was called without an extra argument the optimizer needs."""


def require(name: str, arg: str, value: Any) -> Any:
    """Return ``value``, or raise :class:`MissingExtraArgError` if it is ``None``."""
    if value is None:
        where = "update(updates, state, params)" if arg == "params" else "update(...)"
        raise MissingExtraArgError(
            f"{name}: pass {arg}=<{EXTRA_ARGS.get(arg, arg)}> to {where}; this learned "
            f"optimizer needs it (inside optax.chain, extra args are forwarded to every member)"
        )
    return value


def step_and_budget(
    extra: Mapping[str, Any], count: jax.Array, default_num_steps: int | jax.Array,
    dtype: Any = jnp.float32,
) -> tuple[jax.Array, jax.Array]:
    """``(k, T)`` as ``dtype[]`` scalars (the optimizer's :func:`compute_dtype`).

    ``k`` is the ``iteration`` extra arg if given, else the optimizer's internal ``count`` (the
    number of updates already applied from this state); ``T`` is the ``num_steps`` extra arg
    if given, else ``default_num_steps``, and is at least 1.
    """
    k = extra.get("iteration")
    k = count if k is None else k
    t = extra.get("num_steps")
    t = default_num_steps if t is None else t
    return (jnp.asarray(k).astype(dtype), jnp.maximum(jnp.asarray(t).astype(dtype), 1))


def check_num_steps(name: str, num_steps: Any) -> int | jax.Array:
    """Validate the default step budget: a positive int, or an integer array of shape ``()``.

    Python and NumPy ints must be >= 1 and are returned as ``int``. Integer arrays (JAX or
    NumPy, e.g. the int32 hyperparameter of ``optax.inject_hyperparams``) are returned as
    given; a concrete one must be >= 1, a traced one cannot be checked and is clamped to at
    least 1 where it is used (:func:`step_and_budget`). Bools, floats and other shapes raise
    ``ValueError`` naming ``num_steps``.
    """
    def bad(why: str) -> ValueError:
        return ValueError(f"{name}: num_steps must be a positive int or an integer array of "
                          f"shape () (default step budget); {why}, got {num_steps!r}")

    if isinstance(num_steps, bool | np.bool_):
        raise bad("a bool is not a step count")
    if isinstance(num_steps, int | np.integer):
        if num_steps < 1:
            raise bad("it must be >= 1")
        return int(num_steps)
    if not isinstance(num_steps, jax.Array | np.ndarray):
        raise bad(f"{type(num_steps).__name__} is not an int")
    if not jnp.issubdtype(num_steps.dtype, jnp.integer):
        raise bad(f"dtype {num_steps.dtype} is not an integer dtype")
    if num_steps.shape != ():
        raise bad(f"shape {num_steps.shape} is not ()")
    try:
        value = int(num_steps)
    except jax.errors.ConcretizationTypeError:  # traced: checked (clamped) where it is used
        return num_steps
    if value < 1:
        raise bad("it must be >= 1")
    return num_steps


def float_leaves_dtype(*trees: PyTree) -> Any:
    """The promotion of float32 and the float dtypes of the leaves of ``trees``.

    JAX's promotion rules, weak types included: float32 parameters and theta give float32,
    also under ``jax.enable_x64`` where a weakly typed leaf (``jnp.asarray(0.1)``, a Python
    float) is nominally float64; a (strongly typed) float64 leaf gives float64;
    bfloat16/float16 give float32.
    """
    leaves = [x for tree in trees for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.result_type(x), jnp.floating)]
    return jnp.result_type(jnp.float32, *leaves)


def state_dtype(param_dtype: Any) -> Any:
    """Accumulator dtype of a parameter of ``param_dtype``: that dtype, at least float32.

    Low-precision (bfloat16/float16) parameters get float32 accumulators: moving averages at
    decays up to 0.9999 and the normalization statistics are meaningless at 8-11 bits.
    """
    return jnp.promote_types(param_dtype, jnp.float32)


def compute_dtype(theta: PyTree, *state: PyTree) -> Any:
    """The dtype an update is computed in: the promotion of theta's and the state's float
    dtypes (float32 at least)."""
    return float_leaves_dtype(theta, *state)


def _float(field: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{field}: must be a number, got {value!r}") from None


def check_positive(field: str, value: Any) -> float:
    """A finite float > 0 (learning rates, eps, time scales)."""
    v = _float(field, value)
    if not np.isfinite(v) or v <= 0:
        raise ValueError(f"{field}: must be a finite number > 0, got {value!r}")
    return v


def check_decay(field: str, value: Any) -> float:
    """A decay strictly inside (0, 1) (it is stored as a logit)."""
    v = _float(field, value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{field}: must lie strictly between 0 and 1, got {value!r}")
    return v


def check_decays(field: str, values: Sequence[float]) -> tuple[float, ...]:
    vals = tuple(check_decay(field, v) for v in values)
    if not vals:
        raise ValueError(f"{field}: needs at least one decay in (0, 1)")
    return vals


def check_widths(field: str, widths: Sequence[int]) -> tuple[int, ...]:
    ws = tuple(widths)
    if not ws or any(isinstance(w, bool) or not isinstance(w, int | np.integer) or w < 1
                     for w in ws):
        raise ValueError(f"{field}: must be a sequence of positive ints, got {widths!r}")
    return tuple(int(w) for w in ws)


def logit(p: float) -> jax.Array:
    """``log(p / (1 - p))`` as float32[], computed in float64 first."""
    return jnp.asarray(np.log(p) - np.log1p(-p), jnp.float32)


def decay_from_logit(z: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(beta, 1 - beta)`` for ``beta = sigmoid(z)``, both accurate for decays near 1.

    ``1 - beta = sigmoid(-z)`` is computed directly (not as ``1 - beta``, which would lose
    ~4 digits at ``beta = 0.999``); ``beta = 1 - sigmoid(-z)`` rounds to the nearest float32.
    This mirrors optax, whose ``1 - decay`` is computed in float64 from a Python float.
    """
    om = jax.nn.sigmoid(-z)
    return 1.0 - om, om


def safe_sqrt(x: jax.Array) -> jax.Array:
    """``sqrt(x)`` for ``x >= 0`` with a finite derivative everywhere (0 where ``x`` ~ 0).

    The "double where": ``sqrt(where(x > tiny, x, 1)) * [x > tiny]``; forward equals
    ``sqrt(x)`` except for ``x`` below the smallest normal number of its dtype (returns 0
    there).
    """
    ok = x > float(jnp.finfo(jnp.result_type(x)).tiny)
    return jnp.where(ok, jnp.sqrt(jnp.where(ok, x, 1.0)), 0.0)


def f32(x: Any) -> jax.Array:
    """``x`` as a float32 array (initial theta only; updates follow the dtypes in use)."""
    return jnp.asarray(x, jnp.float32)


def jit_init(fn: Callable[..., PyTree], **static: Any) -> Callable[[jax.Array], PyTree]:
    """``key -> fn(key, **static)`` under ``jax.jit``, compiled once per ``(fn, static)``.

    ``fn`` is a module-level function and ``static`` hashable; every learned optimizer built
    with the same configuration shares the compiled initialiser (random draws are slow to
    compile on CPU), instead of recompiling it for each ``make(...)``.
    """
    return _jitted_init(fn, tuple(sorted(static.items())))


@functools.lru_cache(maxsize=64)
def _jitted_init(fn, static_items):
    kwargs = dict(static_items)
    return jax.jit(lambda key: fn(key, **kwargs))
