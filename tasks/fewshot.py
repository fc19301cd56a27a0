"""Few-shot classification episodes on the bundled digits, with a class split.

The 1,797 digits (all scikit-learn splits pooled) are grouped by class, the first
``per_class`` images of each (:func:`class_pools`: ``[10, per_class, 8, 8, 1]``). A
meta-learner trains on the episodes of one half of the classes (0-4) and is tested on the
other (5-9), so meta-test classes are never seen during meta-training.

An ``n``-way ``k``-shot episode (:func:`sample_episode`) draws ``n`` of the pool's classes and,
per class, ``k`` support and ``q`` query images without replacement; labels are the classes'
positions ``0..n-1`` in the draw, so they carry no class identity across episodes:

    xs [n k, 8, 8, 1], ys [n k]  (support, class-major),   xq [n q, 8, 8, 1], yq [n q].

:class:`FewShotCNN` is the small CNN of the MAML-style experiments, written with
:class:`~metaopt.tasks.cnn_family.PatchConv` (convolutions as patch matmuls) so that a batch
of tasks, each with its own weights, runs as batched matmuls on CPU instead of grouped
convolutions. Used by experiments/greedy_fewshot, experiments/maml and
experiments/self_referential (Finn et al. 2017 use Omniglot / miniImageNet; digits is the
bundled stand-in).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from metaopt.tasks.cnn_family import PatchConv
from metaopt.tasks.data.digits import load_digits

PER_CLASS = 170


def class_pools(per_class: int = PER_CLASS) -> np.ndarray:
    """``[10, per_class, 8, 8, 1]`` float32 digits images grouped by class (all splits)."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or not 1 <= per_class <= 174:
        raise ValueError(f"per_class: must be an integer in [1, 174] (the rarest digit has 174 "
                         f"images), got {per_class!r}")
    data = load_digits()
    x = np.concatenate([data.splits[s][0] for s in ("train", "valid", "test")])
    y = np.concatenate([data.splits[s][1] for s in ("train", "valid", "test")])
    return np.stack([x[y == c][:per_class] for c in range(10)]).astype(np.float32)


def check_episode(pools, n_way: int, shots: int, queries: int) -> None:
    """Clear errors for an episode that ``pools`` ``[C, N, ...]`` cannot provide."""
    for field, v in (("n_way", n_way), ("shots", shots), ("queries", queries)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field}: must be a positive integer, got {v!r}")
    if n_way > pools.shape[0]:
        raise ValueError(f"n_way: at most the pool's {pools.shape[0]} classes, got {n_way}")
    if shots + queries > pools.shape[1]:
        raise ValueError(f"shots + queries: at most the pool's {pools.shape[1]} images per "
                         f"class, got {shots} + {queries}")


def sample_episode(key, pools, n_way: int, shots: int, queries: int) -> dict:
    """One episode (module docstring) from ``pools`` ``[C, N, ...]`` (one half of the classes).

    Pure and jittable; ``n_way``, ``shots``, ``queries`` are static.
    """
    check_episode(pools, n_way, shots, queries)
    k_cls, k_img = jax.random.split(key)
    classes = jax.random.permutation(k_cls, pools.shape[0])[:n_way]
    idx = jax.vmap(lambda k: jax.random.permutation(k, pools.shape[1])[: shots + queries])(
        jax.random.split(k_img, n_way))
    imgs = jax.vmap(lambda c, i: pools[c][i])(classes, idx)  # [n, shots + queries, 8, 8, 1]
    labels = jnp.broadcast_to(jnp.arange(n_way)[:, None], (n_way, shots + queries))

    def part(a, lo, hi):
        return a[:, lo:hi].reshape(n_way * (hi - lo), *a.shape[2:])

    return {"xs": part(imgs, 0, shots), "ys": part(labels, 0, shots),
            "xq": part(imgs, shots, shots + queries), "yq": part(labels, shots, shots + queries)}


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits [N, K]`` against integer ``labels [N]``."""
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


class FewShotCNN(nn.Module):
    """``[B, H, W, C]`` -> 3x3 PatchConv + ReLU per entry of ``channels`` (stride 1, then 2)
    -> global mean pool -> ``Dense(out)`` (``out=0``: the pooled features themselves)."""

    channels: Sequence[int] = (16, 32, 32)
    out: int = 5

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i, c in enumerate(self.channels):
            h = jax.nn.relu(PatchConv(c, 1 if i == 0 else 2, nn.initializers.lecun_normal())(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.out)(h) if self.out else h
