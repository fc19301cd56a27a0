"""Parts shared by the classification task families (``mlp_family``, ``cnn_family``,
``logistic_family``, ``autoencoder_family``): option checks, per-task draws, data subsets and
label noise.

A classifier family's task config is :class:`ClassifierConfig` (scalar arrays only, so the
family vmaps):

* ``init_scale = exp(log_init_scale)``, ``log_init_scale ~ U(log lo, log hi)``;
* ``activation ~ U{0..A-1}``: an index into the family's activation names (``lax.switch``);
* ``label_noise = p ~ U(lo, hi)``: a training label is redrawn uniformly with probability
  ``p`` (:func:`noisy_labels`, a function of ``(data_seed, example)`` only);
* ``data_seed``: the training subset ``perm[(o + j) mod n]``, ``j < subset_size``, of one
  fixed permutation ``perm`` of the ``n`` training examples at a random offset ``o``
  (:func:`subset_sampler`); a batch draws ``j`` uniformly: O(batch) work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from metaopt.tasks import validate
from metaopt.tasks.data.arrays import sample_indices
from metaopt.tasks.models import ACTIVATIONS

PERMUTATION_SEED = 0


class ClassifierConfig(NamedTuple):
    """One task of a classifier family; every field is a scalar array."""

    log_init_scale: jax.Array  # float32[], log of the kernel init multiplier
    activation: jax.Array  # int32[], index into the family's activation names
    label_noise: jax.Array  # float32[], probability p that a training label is redrawn
    data_seed: jax.Array  # uint32[], seeds the training subset and the label noise


def check_range(name: str, value: object, check: Callable[[str, object], float]) -> tuple:
    """A pair ``(low, high)`` with ``low <= high``, each passing ``check(field, value)``."""
    try:
        a, b = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a pair (low, high), got {value!r}") from None
    a, b = check(f"{name}[0]", a), check(f"{name}[1]", b)
    if a > b:
        raise ValueError(f"{name}: low {a} must not exceed high {b}; allowed: low <= high")
    return a, b


def check_probability_range(name: str, value: object) -> tuple[float, float]:
    return check_range(name, value, lambda f, v: validate.in_range(f, v, 0.0, 1.0))


def check_activations(activations: Sequence[str] | str) -> tuple[str, ...]:
    """A non-empty tuple of names from ``tasks.models.ACTIVATIONS``."""
    acts = (activations,) if isinstance(activations, str) else tuple(activations)
    if not acts:
        raise ValueError(f"activations: must not be empty; allowed values are {list(ACTIVATIONS)}")
    for i, a in enumerate(acts):
        validate.one_of(f"activations[{i}]", a, ACTIVATIONS)
    return acts


def log_uniform(u: jax.Array, lo: float, hi: float) -> jax.Array:
    """``log x`` for ``x`` log-uniform on ``[lo, hi]``, from ``u ~ U(0, 1)``."""
    return math.log(lo) + (math.log(hi) - math.log(lo)) * u


def sample_classifier_config(
    key: jax.Array, scale_range: tuple[float, float], num_activations: int,
    noise_range: tuple[float, float],
) -> ClassifierConfig:
    """One :class:`ClassifierConfig` (one uniform draw of 3 and one of bits: cheap to
    compile under vmap)."""
    k_u, k_d = jax.random.split(key)
    u = jax.random.uniform(k_u, (3,))
    act = jnp.minimum(jnp.floor(u[1] * num_activations), num_activations - 1)
    return ClassifierConfig(
        log_init_scale=log_uniform(u[0], *scale_range),
        activation=act.astype(jnp.int32),
        label_noise=noise_range[0] + (noise_range[1] - noise_range[0]) * u[2],
        data_seed=jax.random.bits(k_d, (), jnp.uint32),
    )


def noisy_labels(
    key: jax.Array, labels: jax.Array, idx: jax.Array, rate: jax.Array, num_classes: int
) -> jax.Array:
    """Example ``idx[b]`` gets a uniform random label with probability ``rate``. ``[B] -> [B]``.

    Deterministic in ``(key, idx[b])``: the same example is corrupted the same way every time.
    Two 32-bit words per example, ``bits = random.bits(fold_in(key, i), (2,))``, give
    ``u = (bits_0 >> 8) / 2^24`` (redraw iff ``u < rate``) and the new label ``bits_1 mod C``
    (bias below ``C / 2^32``); two threefry calls keep compile time small.
    """

    def one(label, i):
        bits = jax.random.bits(jax.random.fold_in(key, i), (2,), jnp.uint32)
        u = (bits[0] >> 8).astype(jnp.float32) * (1.0 / (1 << 24))
        new = (bits[1] % jnp.uint32(num_classes)).astype(labels.dtype)
        return jnp.where(u < rate, new, label)

    return jax.vmap(one)(labels, idx)


def subset_sampler(n_train: int, subset_size: int, num_classes: int):
    """``fns(data_seed, label_noise) -> (index_fn, label_fn)`` for
    :func:`tasks.classification.classification_task`: a task's training subset and its label
    noise (``label_noise=None``: clean labels). The permutation is made once, here."""
    perm = jnp.asarray(np.random.default_rng(PERMUTATION_SEED).permutation(n_train), jnp.int32)
    base_key = jax.random.key(PERMUTATION_SEED)

    def fns(data_seed: jax.Array, label_noise: jax.Array | None):
        k_offset, k_noise = jax.random.split(jax.random.fold_in(base_key, data_seed))
        offset = sample_indices(k_offset, n_train, 1)[0]

        def index_fn(key, n, size):
            return jnp.take(perm, (offset + sample_indices(key, subset_size, size)) % n_train)

        def label_fn(labels, idx, split):
            if split != "train" or label_noise is None:
                return labels
            return noisy_labels(k_noise, labels, idx, label_noise, num_classes)

        return index_fn, label_fn

    return fns


def check_subset(n_train: int, subset_size: int, batch_size: int) -> None:
    validate.batch_fits("subset_size", subset_size, "train", n_train)
    validate.batch_fits("batch_size", batch_size, "train subset", subset_size)
