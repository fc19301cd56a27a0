"""A parametric family of MLP classification tasks on one data set (default: bundled digits).

Each task ``cfg`` (:class:`MLPFamilyConfig`, scalar arrays only, so the family vmaps) draws

* ``init_scale = exp(log_init_scale)``, ``log_init_scale ~ U(log lo, log hi)``: the kernels are
  ``init_scale`` times LeCun-normal (``Var W = init_scale^2 / fan_in``, as ``tasks.models.MLP``);
* ``activation ~ U{0..A-1}``: an index into the family's ``activations``, applied with
  ``lax.switch`` (under ``vmap`` every branch runs and one is selected);
* ``label_noise = p ~ U(lo, hi)``: training example ``i`` keeps its label with probability
  ``1 - p`` and otherwise gets a uniform random label (possibly the same one), so a fraction
  ``p (1 - 1/C)`` of labels is wrong. The draw is a function of ``(data_seed, i)`` only
  (:func:`tasks.family_common.noisy_labels`), hence the same at every step; valid / test
  labels stay clean;
* ``data_seed``: picks the task's training subset, the window
  ``perm[(o + j) mod n]``, ``j < subset_size``, of one fixed permutation ``perm`` of the ``n``
  training examples at a random offset ``o``. A batch draws ``j`` uniformly: O(batch) work.

Widths, batch size, subset size and the activation names are static; every ``task(cfg)`` has the
same params and batch pytree structure. Tasks are :func:`tasks.classification.classification_task`
(mean softmax cross-entropy, optional per-example weights) on :class:`ConfigMLP`.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.augment import maybe_augment
from metaopt.tasks.base import Task, TaskFamily
from metaopt.tasks.classification import classification_task
from metaopt.tasks.data.arrays import ArrayDataset
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.family_common import (
    ClassifierConfig,
    check_activations,
    check_probability_range,
    check_range,
    check_subset,
    sample_classifier_config,
    subset_sampler,
)
from metaopt.tasks.models import ACTIVATIONS

MLPFamilyConfig = ClassifierConfig  # the name before cnn_family shared it


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


def mlp_family(
    data: ArrayDataset | None = None,
    hidden: Sequence[int] = (32,),
    batch_size: int = 128,
    subset_size: int = 512,
    init_scale_range: tuple[float, float] = (0.5, 2.0),
    activations: Sequence[str] = ("relu", "tanh", "gelu", "silu", "elu"),
    label_noise_range: tuple[float, float] = (0.0, 0.3),
    augment_scale_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """MLP classifiers ``in-hidden-C`` on ``data``; see the module docstring for what varies.

    ``augment_scale_range``: ``(lo, hi)`` turns on per-task parameter rescaling
    (:func:`tasks.augment.augment_scales`); ``None`` (default) leaves the tasks as they are.
    """
    data = load_digits() if data is None else data
    hidden = validate.positive_ints("hidden", hidden)
    n_train = data.size("train")
    check_subset(n_train, subset_size, batch_size)
    scale_range = check_range("init_scale_range", init_scale_range, validate.positive_float)
    noise_range = check_probability_range("label_noise_range", label_noise_range)
    acts = check_activations(activations)
    dev = data.to_device()
    subsets = subset_sampler(n_train, subset_size, data.num_classes)
    name = f"{data.name}_mlp_family_" + "-".join(str(w) for w in hidden)

    def sample(key):
        return sample_classifier_config(key, scale_range, len(acts), noise_range)

    def task(cfg: ClassifierConfig) -> Task:
        index_fn, label_fn = subsets(cfg.data_seed, cfg.label_noise)
        model = ConfigMLP(hidden, data.num_classes, acts, cfg.activation,
                          jnp.exp(cfg.log_init_scale))
        return classification_task(model, dev, batch_size, name, label_fn=label_fn,
                                   index_fn=index_fn)

    return maybe_augment(TaskFamily(sample=sample, task=task, name=name), augment_scale_range)
