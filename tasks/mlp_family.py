"""A parametric family of MLP classification tasks on one data set (default: bundled digits).

Each task ``cfg`` (:class:`MLPFamilyConfig`, scalar arrays only, so the family vmaps) draws

* ``init_scale = exp(log_init_scale)``, ``log_init_scale ~ U(log lo, log hi)``: the kernels are
  ``init_scale`` times LeCun-normal (``Var W = init_scale^2 / fan_in``, as ``tasks.models.MLP``);
* ``activation ~ U{0..A-1}``: an index into the family's ``activations``, applied with
  ``lax.switch`` (under ``vmap`` every branch runs and one is selected);
* ``label_noise = p ~ U(lo, hi)``: training example ``i`` keeps its label with probability
  ``1 - p`` and otherwise gets a uniform random label (possibly the same one), so a fraction
  ``p (1 - 1/C)`` of labels is wrong. The draw is a function of ``(data_seed, i)`` only
  (:func:`noisy_labels`), hence the same at every step; valid / test labels stay clean;
* ``data_seed``: picks the task's training subset, the window
  ``perm[(o + j) mod n]``, ``j < subset_size``, of one fixed permutation ``perm`` of the ``n``
  training examples at a random offset ``o``. A batch draws ``j`` uniformly: O(batch) work.

Widths, batch size, subset size and the activation names are static; every ``task(cfg)`` has the
same params and batch pytree structure. Tasks are :func:`tasks.classification.classification_task`
(mean softmax cross-entropy, optional per-example weights) on :class:`ConfigMLP`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metaopt.tasks import validate
from metaopt.tasks.base import Task, TaskFamily
from metaopt.tasks.classification import classification_task
from metaopt.tasks.data.arrays import ArrayDataset, sample_indices
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.models import ACTIVATIONS

PERMUTATION_SEED = 0


class MLPFamilyConfig(NamedTuple):
    """One task of :func:`mlp_family`; every field is a scalar array."""

    log_init_scale: jax.Array  # float32[], log of the kernel init multiplier
    activation: jax.Array  # int32[], index into the family's activation names
    label_noise: jax.Array  # float32[], probability p that a training label is redrawn
    data_seed: jax.Array  # uint32[], seeds the training subset and the label noise


class ConfigMLP(nn.Module):
    """``tasks.models.MLP`` whose activation index and init scale are (traced) arrays."""

    hidden: Sequence[int]
    out: int
    activations: tuple[str, ...]
    activation_index: jax.Array
    init_scale: jax.Array

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        lecun = nn.initializers.lecun_normal()
        kinit = lambda key, shape, dtype=jnp.float32: self.init_scale * lecun(key, shape, dtype)
        branches = [ACTIVATIONS[a] for a in self.activations]
        for width in self.hidden:
            z = nn.Dense(width, kernel_init=kinit)(h)
            h = jax.lax.switch(self.activation_index, branches, z)
        return nn.Dense(self.out, kernel_init=kinit)(h)


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


def _check_range(name: str, value: object, check: Callable[[str, object], float]) -> tuple:
    """A pair ``(low, high)`` with ``low <= high``, each passing ``check(field, value)``."""
    try:
        a, b = value  # type: ignore[misc]
    except (TypeError, ValueError):
        raise ValueError(f"{name}: must be a pair (low, high), got {value!r}") from None
    a, b = check(f"{name}[0]", a), check(f"{name}[1]", b)
    if a > b:
        raise ValueError(f"{name}: low {a} must not exceed high {b}; allowed: low <= high")
    return a, b


def mlp_family(
    data: ArrayDataset | None = None,
    hidden: Sequence[int] = (32,),
    batch_size: int = 128,
    subset_size: int = 512,
    init_scale_range: tuple[float, float] = (0.5, 2.0),
    activations: Sequence[str] = ("relu", "tanh", "gelu", "silu", "elu"),
    label_noise_range: tuple[float, float] = (0.0, 0.3),
) -> TaskFamily:
    """MLP classifiers ``in-hidden-C`` on ``data``; see the module docstring for what varies."""
    data = load_digits() if data is None else data
    hidden = validate.positive_ints("hidden", hidden)
    n_train = data.size("train")
    validate.batch_fits("subset_size", subset_size, "train", n_train)
    validate.batch_fits("batch_size", batch_size, "train subset", subset_size)
    s_lo, s_hi = _check_range("init_scale_range", init_scale_range, validate.positive_float)
    p_lo, p_hi = _check_range(
        "label_noise_range", label_noise_range, lambda f, v: validate.in_range(f, v, 0.0, 1.0)
    )
    acts = tuple(activations) if not isinstance(activations, str) else (activations,)
    if not acts:
        raise ValueError(f"activations: must not be empty; allowed values are {list(ACTIVATIONS)}")
    for i, a in enumerate(acts):
        validate.one_of(f"activations[{i}]", a, ACTIVATIONS)
    dev = data.to_device()
    perm = jnp.asarray(np.random.default_rng(PERMUTATION_SEED).permutation(n_train), jnp.int32)
    base_key = jax.random.key(PERMUTATION_SEED)
    name = f"{data.name}_mlp_family_" + "-".join(str(w) for w in hidden)

    def sample(key):
        # One uniform draw of 3 and one of bits: few threefry calls, cheap to compile under vmap.
        k_u, k_d = jax.random.split(key)
        u = jax.random.uniform(k_u, (3,))
        log_lo, log_hi = math.log(s_lo), math.log(s_hi)
        return MLPFamilyConfig(
            log_init_scale=log_lo + (log_hi - log_lo) * u[0],
            activation=jnp.minimum(jnp.floor(u[1] * len(acts)), len(acts) - 1).astype(jnp.int32),
            label_noise=p_lo + (p_hi - p_lo) * u[2],
            data_seed=jax.random.bits(k_d, (), jnp.uint32),
        )

    def task(cfg: MLPFamilyConfig) -> Task:
        k_offset, k_noise = jax.random.split(jax.random.fold_in(base_key, cfg.data_seed))
        offset = sample_indices(k_offset, n_train, 1)[0]

        def index_fn(key, n, size):
            return jnp.take(perm, (offset + sample_indices(key, subset_size, size)) % n_train)

        def label_fn(labels, idx, split):
            if split != "train":
                return labels
            return noisy_labels(k_noise, labels, idx, cfg.label_noise, data.num_classes)

        model = ConfigMLP(hidden, data.num_classes, acts, cfg.activation,
                          jnp.exp(cfg.log_init_scale))
        return classification_task(model, dev, batch_size, name, label_fn=label_fn,
                                   index_fn=index_fn)

    return TaskFamily(sample=sample, task=task, name=name)
