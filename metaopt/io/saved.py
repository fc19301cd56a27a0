"""A saved learned optimizer: one self-describing file, written atomically (never pickle).

``optimizer.msgpack`` is a flax-msgpack map::

    {"format": "metaopt.optimizer", "version": 1,
     "description": "<JSON text>",   # what rebuilds the optimizer (SavedOptimizer below)
     "weights": <bytes>,             # flax.serialization.to_bytes(theta)
     "sha256": "<hex>"}              # sha256(description UTF-8 bytes + weights)

The description holds the learned optimizer's spec (registry name and *every* constructor
option, :meth:`metaopt.lopt.REGISTRY.spec`), ``num_steps`` (the step budget ``T`` it was
meta-trained for: the training schedule's maximum episode length), ``feed_valid_loss``
(whether it was meta-trained with the validation loss as an input) and free-form
``provenance``. Description, weights and checksum are one file, written to a temporary file
and ``os.replace``-d, so a kill at any moment leaves either the previous file or the new one.

:func:`load_optimizer` rebuilds exactly that optimizer: ``lopt.optimizer(theta)`` defaults to
the trained budget (``optimizer(theta, num_steps=N)`` still overrides it). A *source* is a
directory holding ``optimizer.msgpack`` (a run directory, a pretrained entry), such a file,
or a pretrained name (:mod:`metaopt.pretrained`). Run directories written before this format
(flat ``config.json`` + ``theta.msgpack`` + ``theta.sha256``; :mod:`.legacy`) still load.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from metaopt import lopt as lopt_lib
from metaopt import pretrained
from metaopt.spec import Spec, SpecError

FILE = "optimizer.msgpack"
FORMAT, VERSION = "metaopt.optimizer", 1
PyTree = Any


class SavedOptimizer(NamedTuple):
    """The description of a saved learned optimizer (module docstring)."""

    lopt: Spec  # registry name and every constructor option
    num_steps: int  # the step budget T it was meta-trained for
    feed_valid_loss: bool  # meta-trained with the validation loss as an input
    provenance: Mapping[str, Any]  # how it was trained (informational)
    path: pathlib.Path  # the file (or pre-0.2 run directory) it was read from

    def to_json(self) -> dict[str, Any]:
        return {"lopt": self.lopt.to_json(), "num_steps": self.num_steps,
                "feed_valid_loss": self.feed_valid_loss, "provenance": dict(self.provenance)}


def check_budget(num_steps: object) -> int:
    """``num_steps`` if it is a positive int (a step budget), else ValueError."""
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps: must be a positive integer, got {num_steps!r}")
    return num_steps


def with_budget(lopt: lopt_lib.LearnedOptimizer, num_steps: int) -> lopt_lib.LearnedOptimizer:
    """``lopt`` whose ``optimizer(theta)`` defaults to the step budget ``num_steps``."""
    default = check_budget(num_steps)

    def optimizer(theta: PyTree, *, num_steps: int = default):
        return lopt.optimizer(theta, num_steps=num_steps)

    return lopt_lib.LearnedOptimizer(lopt.init, optimizer, lopt.name)


def _checksum(description: bytes, weights: bytes) -> str:
    return hashlib.sha256(description + weights).hexdigest()


def save_optimizer(path: str | os.PathLike, lopt: Spec, theta: PyTree, *, num_steps: int,
                   feed_valid_loss: bool, provenance: Mapping[str, Any] | None = None
                   ) -> pathlib.Path:
    """Write ``theta`` and its description to ``path`` (a ``.msgpack`` file, or a directory
    that receives ``optimizer.msgpack``) atomically; returns the file.

    ``lopt`` is resolved against :data:`metaopt.lopt.REGISTRY` (every option stored).
    ``theta`` must be host-addressable (``metaopt.distributed.to_host`` in multi-process runs).
    """
    path = pathlib.Path(path)
    file = path if path.suffix == ".msgpack" else path / FILE
    spec = lopt_lib.REGISTRY.spec(lopt.name, lopt.options)
    check_budget(num_steps)
    if not isinstance(feed_valid_loss, bool):
        raise TypeError(f"feed_valid_loss: expected True or False, got {feed_valid_loss!r}")
    description = json.dumps({"lopt": spec.to_json(), "num_steps": num_steps,
                              "feed_valid_loss": feed_valid_loss,
                              "provenance": dict(provenance or {})}, sort_keys=True).encode()
    weights = serialization.to_bytes(jax.tree.map(np.asarray, theta))
    data = serialization.msgpack_serialize({
        "format": FORMAT, "version": VERSION, "description": description.decode(),
        "weights": weights, "sha256": _checksum(description, weights)})
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, file)  # atomic: the old file or the new one, never a mixture
    except BaseException:
        tmp.unlink(missing_ok=True)  # a kill -9 leaves it behind: harmless, never read
        raise
    return file


def resolve(source: str | os.PathLike) -> pathlib.Path:
    """The saved file or pre-0.2 run directory that ``source`` names (module docstring)."""
    p = pathlib.Path(source)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / FILE).is_file():
            return p / FILE
        from metaopt.io import legacy

        if legacy.is_legacy(p):
            return p
        raise SpecError(str(source), f"no {FILE} in this directory (not a run directory with a "
                        f"trained optimizer); pretrained names are {pretrained.names()}")
    if str(source) in pretrained.names():
        return pretrained.path(str(source)) / FILE
    raise SpecError(str(source), f"neither a run directory, a saved optimizer file nor a "
                    f"pretrained name; allowed pretrained names are {pretrained.names()}")


def _read(file: pathlib.Path) -> tuple[SavedOptimizer, bytes]:
    """The description and the weights' bytes of ``file``, every check done."""
    try:
        record = serialization.msgpack_restore(file.read_bytes())
    except Exception as err:  # msgpack raises several types on garbage  # noqa: BLE001
        raise SpecError(str(file), f"not a readable optimizer file (corrupt or truncated: "
                        f"{type(err).__name__})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise SpecError(str(file), f"not a metaopt optimizer file (no format {FORMAT!r})")
    if record.get("version") != VERSION:
        raise SpecError(str(file), f"format version {record.get('version')!r} is not supported "
                        f"(this metaopt reads version {VERSION})")
    try:
        description, weights = record["description"].encode(), bytes(record["weights"])
        want = record["sha256"]
    except (KeyError, AttributeError, TypeError):
        raise SpecError(str(file), "incomplete optimizer file (description, weights or "
                        "checksum missing)") from None
    if _checksum(description, weights) != want:
        raise SpecError(str(file), "checksum mismatch (file corrupt or modified)")
    return describe_json(json.loads(description), file), weights


def describe_json(data: Mapping[str, Any], path: pathlib.Path) -> SavedOptimizer:
    """A :class:`SavedOptimizer` from its JSON form, the spec re-resolved (SpecError naming
    ``path`` and the field otherwise)."""
    try:
        spec = Spec.from_json(data["lopt"], "lopt")
        spec = lopt_lib.REGISTRY.spec(spec.name, spec.options)
        num_steps, feed = data["num_steps"], data["feed_valid_loss"]
        check_budget(num_steps)
        if not isinstance(feed, bool):
            raise ValueError(f"feed_valid_loss: expected true/false, got {feed!r}")
    except KeyError as err:
        raise SpecError(str(path), f"description lacks {err.args[0]!r}") from None
    except ValueError as err:
        raise SpecError(str(path), f"bad description: {err}") from None
    return SavedOptimizer(spec, num_steps, feed, dict(data.get("provenance") or {}), path)


def read_weights(file: str | os.PathLike) -> bytes:
    """The flax-msgpack weights' bytes of an optimizer file (every check done)."""
    return _read(pathlib.Path(file))[1]


def describe_optimizer(source: str | os.PathLike) -> SavedOptimizer:
    """The description of the optimizer saved at ``source`` (checksum verified)."""
    return _load(source)[0]


def _load(source) -> tuple[SavedOptimizer, PyTree]:
    file = resolve(source)
    if file.is_dir():
        from metaopt.io import legacy

        saved, weights = legacy.read(file)
    else:
        saved, weights = _read(file)
    return saved, weights


def load_optimizer(source: str | os.PathLike) -> tuple[lopt_lib.LearnedOptimizer, PyTree]:
    """``(lopt, theta)`` saved at ``source``: the learned optimizer rebuilt from its spec, its
    ``optimizer(theta)`` defaulting to the trained step budget, and its weights.

    Raises :class:`~metaopt.spec.SpecError` (a ValueError) naming the file for a missing,
    corrupt or mismatched file.
    """
    saved, weights = _load(source)
    lopt = lopt_lib.REGISTRY.make(saved.lopt)
    like = jax.eval_shape(lopt.init, jax.random.key(0))
    try:
        state = serialization.msgpack_restore(weights)
        theta = serialization.from_state_dict(like, state)
        bad = [f"{jax.tree_util.keystr(k)} {np.shape(x)}/{np.asarray(x).dtype} (expected "
               f"{ref.shape}/{ref.dtype})"
               for (k, x), ref in zip(jax.tree_util.tree_leaves_with_path(theta),
                                      jax.tree.leaves(like), strict=True)
               if np.shape(x) != ref.shape or np.asarray(x).dtype != ref.dtype]
    except (ValueError, TypeError, KeyError) as err:
        raise SpecError(str(saved.path), f"weights do not fit {saved.lopt.name} with the "
                        f"saved options ({str(err).splitlines()[0][:200]})") from None
    if bad:
        raise SpecError(str(saved.path), f"weights do not fit {saved.lopt.name} with the saved "
                        f"options: {bad[0]}")
    theta = jax.tree.map(jnp.asarray, theta)
    return with_budget(lopt, saved.num_steps), theta
