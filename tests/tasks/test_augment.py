"""Parameter-scale task augmentation: p = s * p', loss'(p') = loss(s p'),
grad'(p') = s * grad(s p'), init' = init / s, per leaf and per task."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt import tasks
from metaopt.spec import Spec


def _setup():
    base = tasks.mlp_family(hidden=(5,), batch_size=8, label_noise_range=(0.0, 0.0))
    aug = tasks.make("mlp_family", hidden=(5,), batch_size=8, label_noise_range=(0.0, 0.0),
                     augment_scale_range=(0.1, 10.0))
    return base, aug


@pytest.mark.slow  # ~15-20 s of compiling on 2 cores (default suite < 10 min)
def test_augmented_loss_gradient_and_init_are_the_rescaled_originals():
    base, aug = _setup()
    h = {"example_logits": jnp.linspace(-2.0, 2.0, tasks.load_digits().size("train"))}

    @jax.jit
    def both(key, q_seed):
        cfg = aug.sample(key)
        task, orig = aug.task(cfg), base.task(cfg.cfg)
        p_aug, p_orig = task.init(key), orig.init(key)
        b = task.batch(key, "train")
        leaves = jax.tree.leaves(p_aug)
        noise = jax.random.split(q_seed, len(leaves))
        q = jax.tree.unflatten(jax.tree.structure(p_aug),
                               [jax.random.normal(k, x.shape) for k, x in zip(noise, leaves)])
        s = jax.tree.unflatten(jax.tree.structure(p_aug), list(jnp.exp(cfg.log_scales)))
        mapped = jax.tree.map(jnp.multiply, s, q)
        return (cfg.log_scales, p_aug, p_orig,
                (task.loss(q, b), orig.loss(mapped, b)),
                (jax.grad(task.loss)(q, b), jax.grad(orig.loss)(mapped, b)),
                (task.loss(q, b, h), orig.loss(mapped, b, h)),
                (task.metrics(q, b), orig.metrics(mapped, b)))

    log_s, p_aug, p_orig, losses, grads, weighted, metrics = both(jax.random.key(0),
                                                                  jax.random.key(1))
    s_leaves = np.exp(np.asarray(log_s, np.float64))
    assert s_leaves.shape == (4,)  # Dense_0 bias/kernel, Dense_1 bias/kernel
    assert s_leaves.min() >= 0.1 * 0.999 and s_leaves.max() <= 10.001
    assert np.unique(s_leaves).size == 4
    for a, o, sv in zip(jax.tree.leaves(p_aug), jax.tree.leaves(p_orig), s_leaves):
        np.testing.assert_allclose(a, np.asarray(o) / sv, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(*losses, rtol=1e-6)
    # Chain rule: the optimizer sees s * grad L at the mapped point.
    for ga, go, sv in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), s_leaves):
        np.testing.assert_allclose(ga, sv * np.asarray(go, np.float64), rtol=1e-4, atol=1e-7)
    # Hyperparameters (per-example weights) and metrics pass through at the mapped point.
    np.testing.assert_allclose(*weighted, rtol=1e-6)
    assert abs(float(weighted[0]) - float(losses[0])) > 1e-4
    for k, v in metrics[1].items():
        np.testing.assert_allclose(metrics[0][k], v, rtol=1e-6)


def test_augmented_gradient_matches_float64_finite_differences():
    """Independently of autodiff: central differences of loss' in float64."""
    fam = tasks.augment_scales(tasks.quadratic_family(dim=3, condition_number=5.0), (0.2, 5.0))
    with jax.enable_x64(True):
        cfg = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), fam.sample(jax.random.key(0)))
        task = fam.task(cfg)
        q = jnp.array([0.3, -0.7, 1.1], jnp.float64)
        grad = np.asarray(jax.jit(jax.grad(task.loss))(q, {}))
        eps, loss = 1e-6, jax.jit(task.loss)
        fd = [(float(loss(q + e, {})) - float(loss(q - e, {}))) / (2 * eps)
              for e in np.eye(3) * eps]
        s = float(np.exp(cfg.log_scales[0]))
        h = np.asarray(cfg.cfg.hessian())
        want = s * h @ (s * np.asarray(q) - np.asarray(cfg.cfg.center))
    np.testing.assert_allclose(fd, want, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(grad, want, rtol=1e-9, atol=1e-12)
    assert abs(s - 1.0) > 1e-3


def test_vmapped_augmented_family_varies_scales_per_task_and_keeps_structure():
    _, aug = _setup()
    cfgs = jax.jit(jax.vmap(aug.sample))(jax.random.split(jax.random.key(0), 256))
    logs = np.asarray(cfgs.log_scales)
    assert logs.shape == (256, 4)
    # log s ~ U(log 0.1, log 10): mean 0, sd 2 log(10) / sqrt(12) = 1.33.
    assert abs(logs.mean()) < 4 * 1.33 / 32 and logs.std() == pytest.approx(1.33, rel=0.1)
    key = jax.random.key(1)
    shapes = [jax.eval_shape(lambda k: aug.task(aug.sample(k)).init(key), k)
              for k in jax.random.split(key, 2)]
    assert shapes[0] == shapes[1]


def test_augment_option_round_trips_through_a_spec_and_the_command_line():
    spec = tasks.REGISTRY.spec("cnn_family", {"augment_scale_range": [0.5, 2.0]})
    assert spec.options["augment_scale_range"] == (0.5, 2.0)
    import json
    assert Spec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
    assert tasks.REGISTRY.parse("logistic_family", "augment_scale_range", "0.1,10") == (0.1, 10.0)
    assert tasks.REGISTRY.parse("sequence_family", "augment_scale_range", "none") is None
    fam = tasks.REGISTRY.make(spec)
    assert fam.name.endswith("_aug")
    with pytest.raises(ValueError, match=r"augment_scale_range: low 2.0 must not exceed high"):
        tasks.make("autoencoder_family", augment_scale_range=(2.0, 0.5))
    with pytest.raises(ValueError, match=r"augment_scale_range\[0\]: must be a positive number"):
        tasks.make("mlp_family", augment_scale_range=(0.0, 2.0))
