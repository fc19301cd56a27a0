"""Orbax checkpoints of a whole training state, keeping the last ``k``.

The state is any pytree of arrays. Typed PRNG keys (``jax.random.key``) are stored as their
raw ``uint32`` key data and re-wrapped on restore from the abstract target, so a resumed run
continues with bit-identical keys. Orbax writes each step to a temporary directory and
renames it on commit, so an interrupted save never shadows a good one.

Every save records a sha256 digest of each array's bytes (with its dtype and shape) in the
step's orbax metadata (``custom_metadata["sha256"]``, committed with the step), and a restore
recomputes and compares them, so a flipped byte is never loaded silently. A checkpoint that
is *corrupt* -- unreadable files, or contents that do not match their digest -- is reported,
moved aside and the previous one used (:meth:`Checkpointer.restore_latest`). Anything else
stops with :class:`CheckpointError` and moves nothing: a permission error, or a checkpoint
whose arrays do not have the shapes the run's config describes (the config was edited).
Checkpoints written before digests existed restore unverified. Arrays split over several
processes are not digested (each process holds only its shards).
"""

from __future__ import annotations

import collections
import errno
import hashlib
import logging
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

PyTree = Any
log = logging.getLogger(__name__)
DIGEST = "sha256"  # key of the per-array digests in the step's custom metadata


class CheckpointError(ValueError):
    """A checkpoint that cannot be used for a reason other than corruption (nothing moved)."""


class CorruptCheckpoint(Exception):
    """A checkpoint's contents do not match their digest."""


def digests(saveable: PyTree) -> list[str | None]:
    """sha256 of each leaf's dtype, shape and bytes (None for arrays split over processes)."""
    out = []
    for x in jax.tree.leaves(saveable):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            out.append(None)
            continue
        a = np.ascontiguousarray(np.asarray(x))
        h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.view(np.uint8).reshape(-1) if a.size else b"")
        out.append(h.hexdigest())
    return out


def _is_permission(err: BaseException) -> bool:
    while err is not None:
        if isinstance(err, PermissionError) or getattr(err, "errno", None) in (
                errno.EACCES, errno.EPERM):
            return True
        if "permission denied" in str(err).lower():
            return True
        err = err.__cause__ or err.__context__
    return False


def _shapes(tree: PyTree) -> collections.Counter:
    return collections.Counter((tuple(x.shape), str(np.dtype(x.dtype)))
                               for x in jax.tree.leaves(tree))


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
            item_handlers=ocp.StandardCheckpointHandler(),  # metadata readable before a save
        )

    def steps(self) -> list[int]:
        self._manager.reload()
        return sorted(self._manager.all_steps())

    def save(self, step: int, state: PyTree) -> None:
        """Write ``state`` as checkpoint ``step`` with the digests of its arrays
        (synchronously; committed when this returns)."""
        saveable = to_saveable(state)
        self._manager.save(step, args=ocp.args.StandardSave(saveable), force=True,
                           custom_metadata={DIGEST: digests(saveable)})
        self._manager.wait_until_finished()

    def check(self, step: int, like: PyTree) -> list[str | None] | None:
        """The saved digests of ``step`` (None: saved without), after checking that its arrays
        have the shapes of ``like``: CheckpointError if not, CorruptCheckpoint if its
        metadata cannot be read."""
        try:
            meta = self._manager.metadata(step)
            tree = self._manager.item_metadata(step)
            tree = getattr(tree, "tree", tree)
            saved_shapes = _shapes(tree)
            if not saved_shapes:
                raise ValueError("no array metadata")
        except Exception as err:  # noqa: BLE001  (unreadable metadata: corrupt)
            if _is_permission(err):
                raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be read "
                                      f"({_first_line(err)})") from None
            raise CorruptCheckpoint(f"metadata unreadable ({_first_line(err)})") from None
        want = _shapes(_abstract(like))
        if saved_shapes != want:
            extra = sorted((saved_shapes - want).items())[:2]
            missing = sorted((want - saved_shapes).items())[:2]
            raise CheckpointError(
                f"checkpoint {step} in {self.directory} holds arrays of other shapes than the "
                f"run's config describes (saved {extra}, expected {missing}); was config.json "
                f"edited? Nothing was moved")
        custom = getattr(meta, "custom_metadata", None) or {}
        return custom.get(DIGEST)

    def restore(self, step: int, like: PyTree) -> PyTree:
        """Checkpoint ``step`` shaped as ``like``, its digests verified (module docstring)."""
        want = self.check(step, like)
        saved = self._manager.restore(step, args=ocp.args.StandardRestore(_abstract(like)))
        if want is not None:
            got = digests(saved)
            bad = [i for i, (a, b) in enumerate(zip(got, want, strict=False))
                   if a is not None and b is not None and a != b]
            if len(got) != len(want) or bad:
                raise CorruptCheckpoint(f"contents do not match their sha256 digest "
                                        f"({len(bad)} of {len(got)} arrays differ)")
        return from_saveable(saved, like)

    def restore_latest(self, like: PyTree) -> tuple[int, PyTree] | None:
        """The newest intact checkpoint as ``(step, state)``; ``None`` if there is none.

        A corrupt checkpoint (unreadable, or not matching its digests) is reported (logged and
        returned in ``self.skipped``) and the one before it is tried; once one restores, the
        corrupt newer ones are moved aside to ``<directory>.unreadable/<step>`` (kept for
        inspection, and so that the steps can be written again). If every checkpoint is
        corrupt, nothing is moved and CheckpointError says so. Any other failure (a permission
        error, arrays of other shapes than ``like``) raises CheckpointError at once.
        """
        self.skipped: list[tuple[int, str]] = []
        steps = self.steps()
        for step in reversed(steps):
            try:
                restored = self.restore(step, like)
            except CheckpointError:
                raise
            except Exception as err:  # noqa: BLE001  (corrupt / partial: fall back)
                if _is_permission(err):
                    raise CheckpointError(f"checkpoint {step} in {self.directory} cannot be "
                                          f"read ({_first_line(err)}); nothing was moved"
                                          ) from None
                msg = f"{type(err).__name__}: {_first_line(err)}"
                log.warning("checkpoint %d in %s is corrupt (%s)", step, self.directory, msg)
                self.skipped.append((step, msg))
                continue
            for bad, _ in self.skipped:
                self._move_aside(bad)
            return step, restored
        if self.skipped:
            raise CheckpointError(f"every checkpoint in {self.directory} is corrupt (steps "
                                  f"{steps}; latest: {self.skipped[0][1]}); nothing was moved; "
                                  f"to start over, move {self.directory} away")
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


def _first_line(err: BaseException) -> str:
    return (str(err).splitlines() or [type(err).__name__])[0][:300]
