"""Small flax linen models for the tasks: an MLP and a CNN classifier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "gelu": jax.nn.gelu,
    "silu": jax.nn.silu,
    "elu": jax.nn.elu,
    "sigmoid": jax.nn.sigmoid,
}


class MLP(nn.Module):
    """``x -> Dense(h_1) -> act -> ... -> Dense(h_k) -> act -> Dense(out)``; input flattened.

    ``init_scale`` multiplies the default (LeCun-normal) kernel init.
    """

    hidden: Sequence[int]
    out: int
    activation: Callable[[jax.Array], jax.Array] = jax.nn.relu
    init_scale: float = 1.0

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x.reshape(x.shape[0], -1)
        kinit = nn.initializers.variance_scaling(self.init_scale**2, "fan_in", "truncated_normal")
        for width in self.hidden:
            h = self.activation(nn.Dense(width, kernel_init=kinit)(h))
        return nn.Dense(self.out, kernel_init=kinit)(h)


class CNN(nn.Module):
    """``[B, H, W, C]`` images -> conv 3x3 (stride 1 then 2 ...) -> global mean pool -> Dense."""

    channels: Sequence[int]
    out: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        h = x
        for i, c in enumerate(self.channels):
            h = jax.nn.relu(nn.Conv(c, (3, 3), strides=(1, 1) if i == 0 else (2, 2))(h))
        h = jnp.mean(h, axis=(1, 2))
        return nn.Dense(self.out)(h)
