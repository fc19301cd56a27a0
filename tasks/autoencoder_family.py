"""A parametric family of MLP autoencoders on one data set's inputs (default: bundled digits).

Inputs are flattened to ``x: [B, D]`` with pixel values in ``[0, 1]`` (digits are stored so;
uint8 images are divided by 255 by the batch gather). The model (:class:`ConfigAutoencoder`)

    h = act(... act(act(x W_1 + b_1) W_2 + b_2) ...)          widths hidden..., bottleneck
    z = act(... act(h V_1 + c_1) ...) V_out + c_out             widths reversed(hidden)..., D
    x_hat = sigmoid(z) (``output="sigmoid"``)   or   z (``output="linear"``)

is trained on the mean squared reconstruction error over examples and pixels,

    L = 1/(B D) sum_{b, j} (x_hat_{b j} - x_{b j})^2.

On digits with ``hidden=(32,)``, ``bottleneck=8``: ``64-32-8-32-64``, 4,744 parameters.
Each task draws, as ``mlp_family`` does (:mod:`tasks.family_common`), a log-uniform kernel
init scale (``init_scale`` times LeCun-normal), an activation index (``lax.switch``) and a
training subset; labels are not used. A batch is ``{"x": [B, D], "idx": [B]}``. Source: the
MLP autoencoder tasks of the learned-optimizer task suites (Metz et al. 2020/2022,
learned_optimization ``MLP_AE`` tasks), here on digits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.augment import maybe_augment
from metaopt.tasks.base import Task, TaskFamily, check_split
from metaopt.tasks.data.arrays import ArrayDataset, sample_indices, take_batch
from metaopt.tasks.data.digits import load_digits
from metaopt.tasks.family_common import (
    check_activations,
    check_range,
    check_subset,
    sample_classifier_config,
    subset_sampler,
)
from metaopt.tasks.models import ACTIVATIONS

OUTPUTS = ("sigmoid", "linear")


class AutoencoderConfig(NamedTuple):
    """One task of :func:`autoencoder_family`; every field is a scalar array."""

    log_init_scale: jax.Array  # float32[], log of the kernel init multiplier
    activation: jax.Array  # int32[], index into the family's activation names
    data_seed: jax.Array  # uint32[], seeds the training subset


class ConfigAutoencoder(nn.Module):
    """``D -> hidden... -> bottleneck -> reversed(hidden)... -> D``; see the module docstring."""

    hidden: Sequence[int]
    bottleneck: int
    output: str
    activations: tuple[str, ...]
    activation_index: jax.Array
    init_scale: jax.Array

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lecun = nn.initializers.lecun_normal()
        kinit = lambda key, shape, dtype=jnp.float32: self.init_scale * lecun(key, shape, dtype)
        branches = [ACTIVATIONS[a] for a in self.activations]
        h = x.reshape(x.shape[0], -1)
        for width in (*self.hidden, self.bottleneck, *reversed(self.hidden)):
            h = jax.lax.switch(self.activation_index, branches,
                               nn.Dense(width, kernel_init=kinit)(h))
        z = nn.Dense(x.shape[-1], kernel_init=kinit)(h)
        return jax.nn.sigmoid(z) if self.output == "sigmoid" else z


def autoencoder_family(
    data: ArrayDataset | None = None,
    hidden: Sequence[int] = (32,),
    bottleneck: int = 8,
    output: str = "sigmoid",
    batch_size: int = 128,
    subset_size: int = 512,
    init_scale_range: tuple[float, float] = (0.5, 2.0),
    activations: Sequence[str] = ("relu", "tanh", "gelu", "silu"),
    augment_scale_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """MLP autoencoders on the inputs of ``data``; see the module docstring.

    ``augment_scale_range``: ``(lo, hi)`` turns on per-task parameter rescaling
    (:func:`tasks.augment.augment_scales`); ``None`` (default) leaves the tasks as they are.
    """
    data = load_digits() if data is None else data
    hidden = validate.positive_ints("hidden", hidden)
    validate.positive_int("bottleneck", bottleneck)
    validate.one_of("output", output, OUTPUTS)
    n_train = data.size("train")
    check_subset(n_train, subset_size, batch_size)
    for split in ("valid", "test"):
        validate.batch_fits("batch_size", batch_size, split, data.size(split))
    scale_range = check_range("init_scale_range", init_scale_range, validate.positive_float)
    acts = check_activations(activations)
    dim = math.prod(data.example_shape)
    dev = data.to_device()
    subsets = subset_sampler(n_train, subset_size, data.num_classes)
    widths = (dim, *hidden, bottleneck, *reversed(hidden), dim)
    name = f"{data.name}_autoencoder_family_" + "-".join(str(w) for w in widths)

    def sample(key):
        c = sample_classifier_config(key, scale_range, len(acts), (0.0, 0.0))
        return AutoencoderConfig(c.log_init_scale, c.activation, c.data_seed)

    def task(cfg: AutoencoderConfig) -> Task:
        index_fn, _ = subsets(cfg.data_seed, None)
        model = ConfigAutoencoder(hidden, bottleneck, output, acts, cfg.activation,
                                  jnp.exp(cfg.log_init_scale))

        def init(key):
            return model.init(key, jnp.zeros((1, dim), jnp.float32))["params"]

        def batch(key, split):
            x, y = dev.splits[check_split(split)]
            if split == "train":
                idx = index_fn(key, n_train, batch_size)
            else:
                idx = sample_indices(key, x.shape[0], batch_size)
            xb, _ = take_batch(x, y, idx)
            return {"x": xb.reshape(batch_size, dim).astype(jnp.float32), "idx": idx}

        def loss(params, b, hparams=None):
            return jnp.mean(jnp.square(model.apply({"params": params}, b["x"]) - b["x"]))

        def metrics(params, b):
            return {"loss": loss(params, b)}

        return Task(init=init, loss=loss, batch=batch, metrics=metrics, name=name)

    return maybe_augment(TaskFamily(sample=sample, task=task, name=name), augment_scale_range)
