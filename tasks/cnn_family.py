"""A parametric family of small CNN classifiers on one image data set (default: bundled digits).

The model (:class:`ConfigCNN`) maps images ``x: [B, H, W, C_in]`` to logits ``[B, K]``:

    h_0 = x,   h_l = act(conv3x3_l(h_{l-1}) + b_l),   l = 1..L  (``channels[l-1]`` filters,
                                                      stride 1 for l = 1, stride 2 after, SAME),
    z = mean_{i,j} h_L[:, i, j, :]   (``head="mean"``)   or   flatten(h_L)   (``head="flatten"``),
    logits = z W + b.

On 8x8 digits with ``channels=(8, 16)``: ``8x8x1 -> 8x8x8 -> 4x4x16 -> 16`` (mean) or ``256``
(flatten) ``-> 10``; 1,418 parameters with the mean head, 3,818 with flatten. The default
batch is 32: convolutions are the costly part on CPU (8 tasks x 128 images fall out of cache).

Each task ``cfg`` is a :class:`tasks.family_common.ClassifierConfig`, drawn as for
``mlp_family``: a log-uniform init scale (every kernel is ``init_scale`` times LeCun-normal,
``Var W = init_scale^2 / fan_in``, fan-in ``3*3*C_in`` for a conv), an activation index
(``lax.switch`` over ``activations``), a label-noise rate and a training subset. The loss is
the mean softmax cross-entropy of :func:`tasks.classification.classification_task`.
Source: the small CNNs of the learned-optimizer task suites (Metz et al. 2022, VeLO /
learned_optimization ``Conv_Cifar10_8_16x32``-style image tasks), shrunk to digits.
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

HEADS = ("mean", "flatten")


def _same_pads(n: int, stride: int, size: int = 3) -> tuple[int, int]:
    """XLA's ``SAME`` padding of one axis: output ``ceil(n / stride)``."""
    total = max((-(-n // stride) - 1) * stride + size - n, 0)
    return total // 2, total - total // 2


class PatchConv(nn.Module):
    """A 3x3 ``SAME`` convolution as patches times a matrix: ``nn.Conv``'s params and output.

    The 9 shifted (strided) slices of the padded input are stacked to ``[B, H', W', 9 C_in]``
    and multiplied by the kernel ``[3, 3, C_in, C_out]`` reshaped to ``[9 C_in, C_out]``.
    Vmapped over tasks (one kernel each) this is a batched matmul, where ``nn.Conv`` becomes a
    grouped convolution that XLA's CPU backend runs several times slower.
    """

    features: int
    stride: int
    kernel_init: nn.initializers.Initializer

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, h, w, c = x.shape
        kernel = self.param("kernel", self.kernel_init, (3, 3, c, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        s = self.stride
        (ph0, ph1), (pw0, pw1) = _same_pads(h, s), _same_pads(w, s)
        xp = jnp.pad(x, ((0, 0), (ph0, ph1), (pw0, pw1), (0, 0)))
        ho, wo = -(-h // s), -(-w // s)
        patches = [xp[:, i:i + s * (ho - 1) + 1:s, j:j + s * (wo - 1) + 1:s, :]
                   for i in range(3) for j in range(3)]
        cols = jnp.concatenate(patches, axis=-1)  # [B, ho, wo, 9 C], (i, j, c) order
        return cols @ kernel.reshape(9 * c, self.features) + bias[None, None, None, :]


class ConfigCNN(nn.Module):
    """3x3 convs (stride 1, then 2), mean-pool or flatten, dense; activation index and init
    scale are (traced) arrays."""

    channels: Sequence[int]
    out: int
    head: str
    activations: tuple[str, ...]
    activation_index: jax.Array
    init_scale: jax.Array

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        lecun = nn.initializers.lecun_normal()
        kinit = lambda key, shape, dtype=jnp.float32: self.init_scale * lecun(key, shape, dtype)
        branches = [ACTIVATIONS[a] for a in self.activations]
        h = x
        for i, c in enumerate(self.channels):
            z = PatchConv(c, 1 if i == 0 else 2, kinit)(h)
            h = jax.lax.switch(self.activation_index, branches, z)
        h = jnp.mean(h, axis=(1, 2)) if self.head == "mean" else h.reshape(h.shape[0], -1)
        return nn.Dense(self.out, kernel_init=kinit)(h)


def cnn_family(
    data: ArrayDataset | None = None,
    channels: Sequence[int] = (8, 16),
    head: str = "mean",
    batch_size: int = 32,
    subset_size: int = 512,
    init_scale_range: tuple[float, float] = (0.5, 2.0),
    activations: Sequence[str] = ("relu", "tanh", "gelu", "silu"),
    label_noise_range: tuple[float, float] = (0.0, 0.3),
    augment_scale_range: tuple[float, float] | None = None,
) -> TaskFamily:
    """Small CNN classifiers on the images of ``data``; see the module docstring.

    ``augment_scale_range``: ``(lo, hi)`` turns on per-task parameter rescaling
    (:func:`tasks.augment.augment_scales`); ``None`` (default) leaves the tasks as they are.
    """
    data = load_digits() if data is None else data
    channels = validate.positive_ints("channels", channels)
    if not channels:
        raise ValueError("channels: must not be empty; allowed: one or more positive integers")
    validate.one_of("head", head, HEADS)
    if len(data.example_shape) != 3:
        raise ValueError(f"dataset: cnn_family needs images [H, W, C], got examples of shape "
                         f"{data.example_shape}; allowed: image data sets")
    n_train = data.size("train")
    check_subset(n_train, subset_size, batch_size)
    scale_range = check_range("init_scale_range", init_scale_range, validate.positive_float)
    noise_range = check_probability_range("label_noise_range", label_noise_range)
    acts = check_activations(activations)
    dev = data.to_device()
    subsets = subset_sampler(n_train, subset_size, data.num_classes)
    name = f"{data.name}_cnn_family_" + "-".join(str(c) for c in channels) + f"_{head}"

    def sample(key):
        return sample_classifier_config(key, scale_range, len(acts), noise_range)

    def task(cfg: ClassifierConfig) -> Task:
        index_fn, label_fn = subsets(cfg.data_seed, cfg.label_noise)
        model = ConfigCNN(channels, data.num_classes, head, acts, cfg.activation,
                          jnp.exp(cfg.log_init_scale))
        return classification_task(model, dev, batch_size, name, label_fn=label_fn,
                                   index_fn=index_fn)

    return maybe_augment(TaskFamily(sample=sample, task=task, name=name), augment_scale_range)
