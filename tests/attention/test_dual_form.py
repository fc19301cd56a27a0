"""The dual form of gradient descent (metaopt.dual_form), exact in float64: a linear layer
trained by GD equals W_0 x plus unnormalized linear attention over the stored (input, error)
pairs, for several losses and batchings, and GD with momentum equals attention with momentum.

The primal reference is independent of :func:`train_primal`: plain ``jax.grad`` of the whole
step loss with respect to ``W`` and optax's ``sgd`` (heavy-ball ``momentum``)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt.dual_form import (
    Memory,
    dual_apply,
    linear_attention,
    momentum_attention,
    momentum_coefficients,
    train_primal,
)

D_IN, D_OUT, N = 5, 3, 6


def _data(key):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    x = jax.random.normal(k1, (N, D_IN), jnp.float64)
    w0 = 0.5 * jax.random.normal(k2, (D_OUT, D_IN), jnp.float64)
    targets = jax.random.normal(k3, (N, D_OUT), jnp.float64)
    labels = jax.random.randint(k4, (N,), 0, D_OUT)
    head = jax.random.normal(k4, (D_OUT, 4), jnp.float64)
    return x, w0, targets, labels, head


def _losses(targets, labels, head):
    """Per-example losses of the layer output ``h (d_out,)`` for example ``i``."""
    return {
        "mse": lambda h, i: 0.5 * jnp.sum((h - targets[i]) ** 2),
        "cross_entropy": lambda h, i: optax.softmax_cross_entropy_with_integer_labels(
            h, labels[i]),
        # a fixed nonlinear network on top of the layer: errors are backpropagated through it
        "tanh_head_ce": lambda h, i: optax.softmax_cross_entropy_with_integer_labels(
            jnp.tanh(h) @ head, labels[i] % 4),
    }


SCHEDULES = {  # name -> (steps, batch) example indices: which examples each step sees
    "batch_gd": np.tile(np.arange(N), (8, 1)),
    "sequential": np.tile(np.arange(N), 3)[:, None],  # one example per step, 3 epochs
    "minibatch": np.arange(4 * 3).reshape(4, 3) % N,
}


def _reference(w0, x, idx, per_example, lr, beta):
    """W_T by optax.sgd on the mean loss of each step's minibatch (no dual-form code)."""
    opt = optax.sgd(lr, momentum=beta or None)
    grad = jax.jit(jax.grad(lambda w, rows: jnp.mean(
        jax.vmap(lambda i: per_example(w @ x[i], i))(rows))))
    w, s = w0, opt.init(w0)
    for rows in idx:
        u, s = opt.update(grad(w, rows), s, w)
        w = optax.apply_updates(w, u)
    return w


# the default suite runs four combinations covering every loss, schedule and momentum;
# the full grid (18) is slow-marked
FAST = {("mse", "batch_gd", 0.0), ("cross_entropy", "sequential", 0.0),
        ("tanh_head_ce", "minibatch", 0.9), ("cross_entropy", "batch_gd", 0.9)}
CASES = [pytest.param(loss, sched, beta, marks=() if (loss, sched, beta) in FAST
                      else pytest.mark.slow)
         for loss in ("mse", "cross_entropy", "tanh_head_ce") for sched in sorted(SCHEDULES)
         for beta in (0.0, 0.9)]


@pytest.mark.parametrize(("loss_name", "schedule", "beta"), CASES)
def test_trained_layer_equals_attention_over_inputs_and_errors(loss_name, schedule, beta):
    with jax.enable_x64(True):
        x, w0, targets, labels, head = _data(jax.random.key(0))
        per_example = _losses(targets, labels, head)[loss_name]
        idx = jnp.asarray(SCHEDULES[schedule])
        lr = 0.3

        def step_loss(h, t):  # the mean loss of step t's minibatch, as a function of h (B, d)
            return jnp.mean(jax.vmap(per_example)(h, idx[t]))

        w_t, memory = train_primal(w0, x[idx], step_loss, lr, beta)
        queries = jax.random.normal(jax.random.key(1), (7, D_IN), jnp.float64)
        primal = queries @ w_t.T
        ref = queries @ _reference(w0, x, np.asarray(idx), per_example, lr, beta).T
        dual = dual_apply(w0, memory, queries, lr, beta)
        recursive = momentum_attention(w0, memory, queries, lr, beta)

        assert dual.dtype == jnp.float64
        scale = float(jnp.max(jnp.abs(primal)))
        assert float(jnp.max(jnp.abs(primal - ref))) < 1e-10 * scale  # train_primal is GD
        assert float(jnp.max(jnp.abs(dual - primal))) < 1e-10 * scale  # the identity
        assert float(jnp.max(jnp.abs(recursive - primal))) < 1e-10 * scale
        # the layer did learn: the attention term is far from zero
        assert float(jnp.max(jnp.abs(primal - queries @ w0.T))) > 1e-2 * scale


def test_errors_are_the_loss_gradients_at_each_steps_weights():
    """MSE with mean over the batch: e_i = (W_t x_i - y_i) / B, and W_t from the primal."""
    with jax.enable_x64(True):
        x, w0, targets, _, _ = _data(jax.random.key(2))
        lr, steps = 0.1, 3
        loss = lambda h, t: 0.5 * jnp.mean(jnp.sum((h - targets) ** 2, -1))
        _, memory = train_primal(w0, jnp.broadcast_to(x, (steps, N, D_IN)), loss, lr)
        w = w0
        for t in range(steps):
            e = (x @ w.T - targets) / N
            np.testing.assert_allclose(memory.errors[t], e, rtol=1e-12, atol=1e-14)
            w = w - lr * e.T @ x


def test_momentum_coefficients_and_attention_primitive():
    with jax.enable_x64(True):
        c = momentum_coefficients(4, 0.5, jnp.float64)
        np.testing.assert_allclose(c, [1 + .5 + .25 + .125, 1 + .5 + .25, 1.5, 1.0], rtol=1e-15)
        np.testing.assert_array_equal(momentum_coefficients(3, 0.0, jnp.float64), [1, 1, 1])
        k = jnp.arange(6.0).reshape(3, 2)
        v = jnp.arange(9.0).reshape(3, 3) - 4
        q = jnp.array([0.5, -1.0])
        loop = sum(v[t] * jnp.dot(k[t], q) for t in range(3))
        np.testing.assert_allclose(linear_attention(k, v, q), loop, rtol=1e-15)
    with pytest.raises(ValueError, match="keys"):
        linear_attention(k, v[:2], q)
    with pytest.raises(ValueError, match="query"):
        linear_attention(k, v, jnp.ones(3))
    with pytest.raises(ValueError, match="inputs"):
        train_primal(jnp.zeros((2, 3)), jnp.zeros((4, 3)), lambda h, t: h.sum(), 0.1)
    assert Memory._fields == ("keys", "errors")
