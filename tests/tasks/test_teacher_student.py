"""Teacher-student regression: the Bayes risk is the noise variance, and Adam approaches it."""

import jax
import numpy as np
import optax
import pytest

from metaopt.tasks import teacher_student_family

NOISE = 0.2


def _family(student_hidden=(8,), batch_size=256):
    return teacher_student_family(input_dim=4, teacher_hidden=(8,), student_hidden=student_hidden,
                                  output_dim=2, batch_size=batch_size, noise_std=NOISE)


@jax.jit
def _teacher_draws(key):
    """Losses of the teacher's own weights on 16 train and 16 valid batches, and some batches."""
    fam = _family()
    k_cfg, k_batch = jax.random.split(key)
    cfg = fam.sample(k_cfg)
    task = fam.task(cfg)
    keys = jax.random.split(k_batch, 16)
    # lax.map, not vmap: the batching is not under test and vmapped sampling compiles slowly.
    draw = lambda split: jax.lax.map(lambda k: task.batch(k, split), keys)
    train, valid = draw("train"), draw("valid")
    loss = lambda bs: jax.lax.map(lambda b: task.loss(cfg, b), bs)
    return loss(train), loss(valid), train, valid, draw("test")


def test_loss_at_teacher_weights_is_noise_variance():
    train, valid, *_ = _teacher_draws(jax.random.key(0))
    # mean of 16 * 256 * 2 squared N(0, NOISE^2) draws: SE = NOISE^2 sqrt(2 / 8192).
    se = NOISE**2 * np.sqrt(2.0 / (16 * 256 * 2))
    assert abs(float(train.mean()) - NOISE**2) < 4 * se
    assert abs(float(valid.mean()) - NOISE**2) < 4 * se


def test_batches_are_standard_normal_inputs_with_distinct_split_streams():
    *_, train, valid, test = _teacher_draws(jax.random.key(0))
    assert train["x"].shape == (16, 256, 4) and train["y"].shape == (16, 256, 2)
    assert not np.allclose(train["x"], valid["x"]) and not np.allclose(valid["x"], test["x"])
    for x in (np.asarray(train["x"]), np.asarray(test["x"])):
        assert abs(x.mean()) < 4 / np.sqrt(x.size)
        assert abs(x.var() - 1.0) < 4 * np.sqrt(2.0 / x.size)


def _adam_run(fam, key, steps=200):
    """Initial and final validation loss (mean of 16 batches) of Adam(1e-2) on one sampled task."""
    k_cfg, k_init, k_train, k_valid = jax.random.split(key, 4)
    task = fam.task(fam.sample(k_cfg))
    opt = optax.adam(1e-2)
    valid_keys = jax.random.split(k_valid, 16)
    valid = lambda p: jax.lax.map(lambda k: task.loss(p, task.batch(k, "valid")), valid_keys).mean()

    def step(carry, k):
        params, s = carry
        g = jax.grad(task.loss)(params, task.batch(k, "train"))
        u, s = opt.update(g, s, params)
        return (optax.apply_updates(params, u), s), None

    params = task.init(k_init)
    (final, _), _ = jax.lax.scan(step, (params, opt.init(params)), jax.random.split(k_train, steps))
    return valid(params), valid(final)


def test_adam_reaches_near_the_noise_floor():
    fam = _family(student_hidden=(16,), batch_size=64)
    start, final = (float(v) for v in jax.jit(lambda k: _adam_run(fam, k))(jax.random.key(1)))
    assert start > 5 * NOISE**2  # the untrained student is far from the Bayes risk
    # Excess risk over NOISE^2 shrinks at least tenfold, and the Bayes risk is not beaten beyond
    # Monte Carlo error (16 x 64 x 2 validation draws: SE ~ 3.5% of NOISE^2).
    assert final - NOISE**2 < 0.1 * (start - NOISE**2)
    assert final > 0.85 * NOISE**2


def test_teacher_student_bad_input():
    with pytest.raises(ValueError, match=r"student_hidden\[1\]: must be a positive integer"):
        teacher_student_family(student_hidden=(4, 0))
    with pytest.raises(ValueError, match=r"batch_size: must be a positive integer \(>= 1\)"):
        teacher_student_family(batch_size=0)
    with pytest.raises(ValueError, match=r"activation: unknown value 'softsign'; allowed values"):
        teacher_student_family(activation="softsign")
    with pytest.raises(ValueError, match=r"noise_std: must be a number in \[0.0, inf\]"):
        teacher_student_family(noise_std=-0.1)
    task = _family().task(None)  # the split is checked before the teacher is used
    with pytest.raises(ValueError, match=r"split: unknown split 'dev'; allowed values"):
        task.batch(jax.random.key(0), "dev")
