"""Orbax checkpoints of a whole training state, keeping the last ``k``.

The state is any pytree of arrays. Typed PRNG keys (``jax.random.key``) are stored as their
raw ``uint32`` key data and re-wrapped on restore from the abstract target, so a resumed run
continues with bit-identical keys. Orbax writes each step to a temporary directory and
renames it on commit, so an interrupted save never shadows a good one; a checkpoint that is
present but unreadable (truncated files, wrong structure) is reported and the previous one is
used instead (:meth:`Checkpointer.restore_latest`).
"""

from __future__ import annotations

import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
log = logging.getLogger(__name__)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _saveable_leaf(x):
    if _is_key(x):
        return jax.random.key_data(x)
    if np.size(x) == 0:  # orbax refuses empty arrays: store a 1-element stand-in
        return np.zeros((1,), np.asarray(x).dtype)
    return x


def to_saveable(tree: PyTree) -> PyTree:
    """Replace typed PRNG keys by their uint32 key data and empty arrays by stand-ins."""
    return jax.tree.map(_saveable_leaf, tree)


def _abstract(tree: PyTree) -> PyTree:
    def spec(x):
        sharding = getattr(x, "sharding", None)
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    return jax.tree.map(spec, to_saveable(tree))


def from_saveable(saved: PyTree, like: PyTree) -> PyTree:
    """Inverse of :func:`to_saveable`, guided by the target ``like``."""

    def leaf(s, ref):
        if _is_key(ref):
            return jax.random.wrap_key_data(s, impl=jax.random.key_impl(ref))
        if np.size(ref) == 0:
            return jnp.zeros(ref.shape, ref.dtype)
        return s

    return jax.tree.map(leaf, saved, like)


class Checkpointer:
    """Save / restore numbered checkpoints under ``directory`` (keeps the newest ``keep``)."""

    def __init__(self, directory: str | pathlib.Path, keep: int = 3):
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep: must be a positive integer, got {keep!r}")
        self.directory = pathlib.Path(directory).absolute()
        self._manager = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=False
            ),
        )

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree) -> None:
        """Write ``state`` as checkpoint ``step`` (synchronously; committed when this returns)."""
        self._manager.save(step, args=ocp.args.StandardSave(to_saveable(state)), force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int, like: PyTree) -> PyTree:
        saved = self._manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
        return from_saveable(saved, like)

    def restore_latest(self, like: PyTree) -> tuple[int, PyTree] | None:
        """The newest readable checkpoint as ``(step, state)``; ``None`` if there is none.

        An unreadable checkpoint is reported (logged as a warning and returned in
        ``self.skipped``), moved aside to ``<directory>.unreadable/<step>`` (kept for
        inspection, and so that the step can be written again), and the one before it is tried.
        """
        self.skipped: list[tuple[int, str]] = []
        for step in reversed(self.steps()):
            try:
                return step, self.restore(step, like)
            except Exception as err:  # corrupt / partial / incompatible: fall back  # noqa: BLE001
                msg = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
                log.warning("checkpoint %d in %s is unreadable (%s); trying the previous one",
                            step, self.directory, msg)
                self.skipped.append((step, msg))
                self._move_aside(step)
        return None

    def _move_aside(self, step: int) -> None:
        aside = self.directory.with_name(self.directory.name + ".unreadable")
        aside.mkdir(exist_ok=True)
        target = aside / str(step)
        n = 1
        while target.exists():
            target, n = aside / f"{step}.{n}", n + 1
        (self.directory / str(step)).rename(target)
        self._manager.reload()

    def close(self) -> None:
        self._manager.close()
