"""Data parallelism over a device mesh, single- or multi-host.

The task batch -- the leading axis of every leaf of the estimator state -- is split over the
mesh axis ``"tasks"``; theta, the outer optimizer state and the counters are replicated. Each
device runs the (local) estimator on its ``B / D`` tasks inside :func:`jax.shard_map`, and the
outer step averages gradients and metrics with ``lax.pmean`` (``axis_name="tasks"``). Per-task
randomness is drawn for the whole batch and sliced by ``lax.axis_index`` inside the
estimators, so ``D`` devices compute the same outer update as one device running all ``B``
tasks (up to the order of floating-point sums).

Multi-host runs use JAX's multi-controller runtime: :func:`initialize` calls
``jax.distributed.initialize`` (coordinator address, process count and id from arguments or
the environment variables ``METAOPT_COORDINATOR``, ``METAOPT_NUM_PROCESSES``,
``METAOPT_PROCESS_ID``), after which ``jax.devices()`` lists every process's devices and the
same code runs unchanged: a host count of one is the special case.

On a CPU-only machine the devices can be its cores (:func:`expose_cpu_devices`; the
``metaopt train`` command does it for ``devices=N``).
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from metaopt.estimators.base import per_task  # noqa: F401  (re-exported: task slicing)

AXIS = "tasks"
PyTree = Any


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Start the multi-host runtime if a coordinator is configured; returns whether it did.

    On CPU, cross-process collectives use gloo.
    """
    coordinator = coordinator or os.environ.get("METAOPT_COORDINATOR")
    if not coordinator:
        return False
    num = num_processes if num_processes is not None else _env_int("METAOPT_NUM_PROCESSES", 1)
    pid = process_id if process_id is not None else _env_int("METAOPT_PROCESS_ID", 0)
    if num < 1:
        raise ValueError(f"num_processes: must be a positive integer, got {num}")
    if not 0 <= pid < num:
        raise ValueError(f"process_id: must be in 0..{num - 1}, got {pid}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                               process_id=pid)
    return True


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, str(default))
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{name}: expected an integer, got {text!r}") from None


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, else ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def expose_cpu_devices(count: int) -> None:
    """Make JAX's CPU backend show ``count`` devices, for data parallelism over CPU cores.

    XLA:CPU parallelizes a computation only inside its large operations, so one CPU device
    keeps a multi-core machine mostly on one core for the small batched operations of a
    meta-training step; each device of the CPU backend runs its part of a ``shard_map`` on its
    own thread, so ``count = available_cores()`` devices use every core (PES on the digits MLP:
    2.3x the one-device throughput on 2 cores). Only the CPU backend is affected (an
    accelerator stays the default backend). Must run before JAX initializes its backends, i.e.
    before the first computation or ``jax.devices()``; JAX raises RuntimeError otherwise.
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count: must be a positive int, got {count!r}")
    jax.config.update("jax_num_cpu_devices", count)


def task_mesh(num_devices: int = 0) -> Mesh:
    """A 1-d mesh named ``"tasks"`` over the first ``num_devices`` devices (0: all)."""
    devices = jax.devices()
    n = num_devices or len(devices)
    if not 1 <= n <= len(devices):
        raise ValueError(f"devices: must be in 1..{len(devices)}, got {num_devices}")
    return Mesh(np.asarray(devices[:n]), (AXIS,))


def state_specs(state) -> PyTree:
    """PartitionSpecs of an OuterState: estimator state split on axis 0, the rest replicated."""
    return type(state)(
        theta=jax.tree.map(lambda _: P(), state.theta),
        opt_state=jax.tree.map(lambda _: P(), state.opt_state),
        est_state=jax.tree.map(lambda _: P(AXIS), state.est_state),
        step=P(),
        skipped=P(),
    )


def shard_state(state, mesh: Mesh):
    """Place a host-global OuterState on the mesh (works across processes)."""
    specs = state_specs(state)

    def put(x, spec):
        sharding = NamedSharding(mesh, spec)
        x = np.asarray(jax.device_get(x)) if not jax.dtypes.issubdtype(
            x.dtype, jax.dtypes.prng_key) else x
        return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])

    return jax.tree.map(put, state, specs)


def sharded_step(step_fn, state, mesh: Mesh, donate: bool = False):
    """Wrap a local ``step(key, state) -> (state, metrics)`` (built with
    ``axis_name="tasks"``) into a jitted global step over ``mesh``.

    ``donate=True`` donates the input state's buffers to the output (the caller must not use
    the input state after the call).

    ``check_vma`` stays off, for two reasons found by turning it on (every estimator, one
    step on 2 CPU devices against 1): (1) with it, reverse mode through the replicated theta
    transposes the implicit broadcast into a ``psum`` over the axis, so the estimators, which
    sum per-task gradients over devices themselves (``estimators.base.masked_task_mean``,
    ``task_mean``), would count them twice: TBPTT, T1-T2 and IFT then silently gave a
    different update than one device; (2) ES, full backprop, greedy and RMD did not trace
    (``lax.cond`` branches and ``scan`` carries mixing device-varying and replicated values
    need ``jax.lax.pvary``). Enabling it means writing the estimators for varying-axis types;
    ``tests/train/test_devices.py`` checks that reverse-mode and ES estimators give the
    one-device update.
    """
    specs = state_specs(state)
    mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), specs), out_specs=(specs, P()),
                           check_vma=False)
    return jax.jit(mapped, donate_argnums=(1,) if donate else ())


def data_parallel(step_fn, state, num_devices: int = 0, donate: bool = False):
    """``(jitted global step, state placed on the mesh)`` for the first ``num_devices`` devices
    (0: all): :func:`task_mesh`, :func:`sharded_step` and :func:`shard_state` together.
    ``step_fn`` is the local step, built for ``B / D`` tasks with ``axis_name="tasks"``."""
    mesh = task_mesh(num_devices)
    return sharded_step(step_fn, state, mesh, donate), shard_state(state, mesh)


def to_host(tree: PyTree) -> PyTree:
    """Numpy copies of (replicated or single-device) arrays, also in multi-process runs."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return np.asarray(x.addressable_data(0))
        return np.asarray(jax.device_get(x))

    return jax.tree.map(get, tree)
