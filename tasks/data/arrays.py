"""In-memory classification data sets and in-jit batch sampling.

A data set is loaded once on the host (bundled digits, a local tfds ``data_dir``), converted
to device arrays, and closed over by a task's ``batch(key, split)``. Sampling is
``jax.random.randint`` indices (with replacement) plus a gather: O(batch) work, no host
round trip, so a whole truncation can run inside one compiled ``lax.scan``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.tasks.base import SPLITS, check_split


class ArrayDataset(NamedTuple):
    """Splits of a labelled data set as arrays.

    Attributes:
      splits: ``{split: (x, y)}`` with ``x`` of shape ``[n, *example_shape]`` (float32 in
        [0, 1] or uint8) and ``y`` of shape ``[n]`` (int32 labels), for each split in SPLITS.
      num_classes: number of label values.
      name: the data set's name.
    """

    splits: dict
    num_classes: int
    name: str

    @property
    def example_shape(self) -> tuple[int, ...]:
        return tuple(self.splits["train"][0].shape[1:])

    def size(self, split: str) -> int:
        return int(self.splits[check_split(split)][0].shape[0])

    def to_device(self) -> ArrayDataset:
        splits = self.splits.items()
        return self._replace(
            splits={k: (jnp.asarray(x), jnp.asarray(y, jnp.int32)) for k, (x, y) in splits}
        )


def sample_indices(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """``batch_size`` uniform indices into ``[0, n)``, with replacement. Shape ``[batch_size]``.

    ``bits mod n`` from one 32-bit draw per index: the bias is below ``n / 2**32`` (< 1e-3 for
    any split under 4M examples) and it costs about half of ``jax.random.randint``, which
    draws twice per index; on the 2-core CPU this is a sizeable part of a small inner step.
    """
    bits = jax.random.bits(key, (batch_size,), jnp.uint32)
    return (bits % jnp.uint32(n)).astype(jnp.int32)


def take_batch(x: jax.Array, y: jax.Array, idx: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Gather examples ``idx``; uint8 images are scaled to float32 in [0, 1]."""
    xb = jnp.take(x, idx, axis=0)
    if xb.dtype == jnp.uint8:
        xb = xb.astype(jnp.float32) / 255.0
    return xb, jnp.take(y, idx, axis=0)


def split_arrays(x: np.ndarray, y: np.ndarray, fractions: tuple[float, float], seed: int) -> dict:
    """Split ``(x, y)`` into train / valid / test with a fixed, seeded, stratified permutation.

    ``fractions`` are the (valid, test) fractions; the rest is train.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_valid = int(round(fractions[0] * len(idx)))
        n_test = int(round(fractions[1] * len(idx)))
        parts["valid"].append(idx[:n_valid])
        parts["test"].append(idx[n_valid : n_valid + n_test])
        parts["train"].append(idx[n_valid + n_test :])
    out = {}
    for s in SPLITS:
        idx = rng.permutation(np.concatenate(parts[s]))
        out[s] = (x[idx], y[idx].astype(np.int32))
    return out
