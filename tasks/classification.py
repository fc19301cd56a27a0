"""Supervised classification tasks on an :class:`~tasks.data.ArrayDataset`.

The loss is the mean softmax cross-entropy ``L(w) = -1/B sum_i log softmax(f_w(x_i))_{y_i}``
of a flax linen model ``f_w``. A batch is ``{"x": [B, *example_shape], "y": [B], "idx": [B]}``;
``idx`` are the examples' row numbers in their split, so that metaparameters indexed by
example (per-example weights, as in data hyper-cleaning) can be looked up inside the loss.

With ``hparams`` given, the loss may be weighted per example: ``hparams["example_logits"]``
of shape ``[n_train]`` gives training example ``i`` the weight ``sigmoid(a_i)``
(``L = sum_i s_i l_i / B``); validation and test batches are never weighted.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from metaopt.tasks import validate
from metaopt.tasks.base import Task, check_split
from metaopt.tasks.data.arrays import ArrayDataset, sample_indices, take_batch


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Per-example softmax cross-entropy. ``logits``: [B, C], ``labels``: [B] -> [B]."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]


def classification_task(
    model: nn.Module,
    data: ArrayDataset,
    batch_size: int,
    name: str,
    label_fn: Callable[[jax.Array, jax.Array, str], jax.Array] | None = None,
    index_fn: Callable[[jax.Array, int, int], jax.Array] | None = None,
) -> Task:
    """A :class:`Task` training ``model`` on ``data`` with batches of ``batch_size``.

    Args:
      model: a flax linen module mapping ``[B, *example_shape]`` to logits ``[B, C]``.
      data: the data set; converted to device arrays once, here.
      batch_size: examples per batch; must fit in every split.
      label_fn: optional ``(labels, idx, split) -> labels`` (e.g. label noise).
      index_fn: optional ``(key, n, batch_size) -> idx`` replacing uniform sampling on train.
    """
    if data.num_classes < 2:
        raise ValueError(f"dataset: {data.name!r} is not a classification set (num_classes "
                         f"{data.num_classes}); regression sets train with mlp_regressor")
    for split in ("train", "valid", "test"):
        validate.batch_fits("batch_size", batch_size, split, data.size(split))
    dev = data.to_device()
    example = jnp.zeros((1, *data.example_shape), jnp.float32)

    def init(key):
        return model.init(key, example)["params"]

    def batch(key, split):
        x, y = dev.splits[check_split(split)]
        if split == "train" and index_fn is not None:
            idx = index_fn(key, x.shape[0], batch_size)
        else:
            idx = sample_indices(key, x.shape[0], batch_size)
        xb, yb = take_batch(x, y, idx)
        if label_fn is not None:
            yb = label_fn(yb, idx, split)
        return {"x": xb, "y": yb, "idx": idx, "train": jnp.asarray(split == "train")}

    def loss(params, b, hparams=None):
        per_example = cross_entropy(model.apply({"params": params}, b["x"]), b["y"])
        if hparams is not None and "example_logits" in hparams:
            w = jax.nn.sigmoid(jnp.take(hparams["example_logits"], b["idx"]))
            w = jnp.where(b["train"], w, 1.0)
            return jnp.sum(w * per_example) / per_example.shape[0]
        return jnp.mean(per_example)

    def metrics(params, b):
        logits = model.apply({"params": params}, b["x"])
        return {
            "loss": jnp.mean(cross_entropy(logits, b["y"])),
            "accuracy": jnp.mean(jnp.argmax(logits, -1) == b["y"]),
        }

    return Task(init=init, loss=loss, batch=batch, metrics=metrics, name=name)


def evaluate(task: Task, params, data: ArrayDataset, split: str) -> dict[str, float]:
    """Metrics of ``params`` over the whole ``split`` (not a sample), as Python floats."""
    x, y = data.to_device().splits[check_split(split)]
    b = {"x": x.astype(jnp.float32) / (255.0 if x.dtype == jnp.uint8 else 1.0), "y": y,
         "idx": jnp.arange(x.shape[0]), "train": jnp.asarray(False)}
    return {k: float(v) for k, v in jax.jit(task.metrics)(params, b).items()}
