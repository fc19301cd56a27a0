"""The shipped pretrained optimizers: every entry loads (checksum verified), a modified or
truncated copy is refused naming the file, and ``metaopt.pretrained.optax`` trains the digits
MLP in an ordinary flax/optax loop with no tuning."""

import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import metaopt
from metaopt import pretrained
from metaopt.spec import SpecError
from metaopt.tasks.data import load_digits
from metaopt.tasks.models import MLP


def test_every_shipped_entry_loads_with_its_config_and_eval():
    assert "mlp_small_digits" in pretrained.names()
    for name in pretrained.names():
        folder = pretrained.path(name)
        assert (folder / "config.json").is_file() and (folder / "eval.md").is_file()
        lopt, theta = pretrained.load(name)
        assert jax.tree.leaves(theta) and all(np.isfinite(x).all() for x in jax.tree.leaves(theta))
        tx = pretrained.optax(name, num_steps=10)
        assert isinstance(tx, optax.GradientTransformationExtraArgs)
        assert pretrained.trained_budget(name) == metaopt.describe_optimizer(name).num_steps
    with pytest.raises(SpecError, match="pretrained: unknown name 'nope'"):
        pretrained.optax("nope")


@pytest.mark.parametrize("damage", ["modified", "truncated"])
def test_a_damaged_copy_is_refused_naming_the_file(tmp_path, damage):
    src = pretrained.path("mlp_small_digits") / "optimizer.msgpack"
    file = tmp_path / "optimizer.msgpack"
    shutil.copy(src, file)
    metaopt.load_optimizer(file)  # the intact copy loads
    data = bytearray(file.read_bytes())
    if damage == "modified":
        i = data.rindex(b"sha256") - 40  # a byte of the weights, before the checksum field
        data[i] ^= 0x01
    else:
        data = data[: len(data) // 2]
    file.write_bytes(bytes(data))
    with pytest.raises(SpecError) as err:
        metaopt.load_optimizer(file)
    assert str(file) in str(err.value)
    assert ("checksum mismatch" if damage == "modified" else "corrupt or truncated") in str(
        err.value)


@pytest.mark.parametrize("name", pretrained.names())
def test_pretrained_optax_trains_digits_mlp_in_a_plain_training_loop(name):
    """No tuning, no inner problem: a flax MLP, a jitted step, a Python loop over batches."""
    steps, batch_size = 500, 128
    data = load_digits()
    (x, y), (xt, yt) = data.splits["train"], data.splits["test"]
    model = MLP(hidden=(32,), out=10)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))["params"]
    tx = metaopt.pretrained.optax(name, num_steps=steps)
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, s, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, s = tx.update(grads, s, p, loss=loss)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(steps):
        idx = rng.integers(0, len(y), batch_size)
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
        losses.append(float(loss))
    acc = float(jnp.mean(jnp.argmax(model.apply({"params": params}, xt), -1) == yt))
    assert np.isfinite(losses).all() and np.mean(losses[-50:]) < 0.2 * losses[0]
    assert acc >= 0.90, acc
