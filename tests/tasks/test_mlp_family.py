"""MLP classification family: vmaps, its model matches tasks.models.MLP, label noise, subsets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from metaopt.tasks import ConfigMLP, MLPFamilyConfig, load_digits, mlp_family, noisy_labels
from metaopt.tasks.models import ACTIVATIONS, MLP

DIGITS = load_digits()
N_TRAIN = DIGITS.size("train")


def _loss_of_key(fam):
    def f(key):
        k_cfg, k_init, k_batch = jax.random.split(key, 3)
        task = fam.task(fam.sample(k_cfg))
        params = task.init(k_init)
        return task.loss(params, task.batch(k_batch, "train"))

    return f


def test_vmapped_family_equals_per_key_evaluation():
    fam = mlp_family(hidden=(16,), batch_size=32, subset_size=256)
    keys = jax.random.split(jax.random.key(0), 6)
    f = _loss_of_key(fam)
    batched = jax.jit(jax.vmap(f))(keys)
    one = jax.jit(f)
    for i, k in enumerate(keys):
        np.testing.assert_allclose(batched[i], one(k), rtol=2e-5)
    # Cross-entropy of a fresh 10-class MLP: near log 10, and not identical across tasks.
    assert np.all(np.abs(np.asarray(batched) - np.log(10)) < 1.5)
    assert np.unique(np.asarray(batched)).size == keys.shape[0]


def test_pytree_structures_are_the_same_for_every_config():
    fam = mlp_family(hidden=(16, 8), batch_size=32)
    key = jax.random.key(0)

    def structure(k):
        task = fam.task(fam.sample(k))
        return task.init(key), task.batch(key, "train"), task.batch(key, "valid")

    shapes = [jax.eval_shape(structure, k) for k in jax.random.split(jax.random.key(1), 3)]
    assert all(s == shapes[0] for s in shapes)


def test_sampled_configs_cover_the_configured_ranges():
    acts = ("relu", "tanh", "elu")
    fam = mlp_family(init_scale_range=(0.25, 4.0), activations=acts, label_noise_range=(0.1, 0.2))
    cfg = jax.jit(jax.vmap(fam.sample))(jax.random.split(jax.random.key(0), 256))
    scale = np.exp(np.asarray(cfg.log_init_scale))
    assert scale.min() >= 0.25 and scale.max() <= 4.0
    # log-uniform: log2(scale) ~ U(-2, 2) has mean 0 and sd 4/sqrt(12).
    assert abs(np.log2(scale).mean()) < 4 * (4 / np.sqrt(12)) / 16
    assert sorted(np.unique(np.asarray(cfg.activation)).tolist()) == [0, 1, 2]
    p = np.asarray(cfg.label_noise)
    assert p.min() >= 0.1 and p.max() <= 0.2
    assert np.unique(np.asarray(cfg.data_seed)).size == 256


def _reference_forward(params, x, act):
    h = x.reshape(x.shape[0], -1)
    layers = [params["params"][f"Dense_{i}"] for i in range(len(params["params"]))]
    for layer in layers[:-1]:
        h = act(h @ layer["kernel"] + layer["bias"][None])
    return h @ layers[-1]["kernel"] + layers[-1]["bias"][None]


def test_config_mlp_matches_models_mlp():
    """Activation index i and init scale s act exactly as tasks.models.MLP(act_i, init_scale=s)."""
    names = tuple(ACTIVATIONS)
    x = jax.random.normal(jax.random.key(1), (4, 8, 8, 1))

    @jax.jit
    def ours(index, scale):
        model = ConfigMLP((16, 8), 10, names, index, scale)
        params = model.init(jax.random.key(2), x)
        return params, model.apply(params, x)

    ref = MLP((16, 8), 10, init_scale=0.7).init(jax.random.key(2), x)
    params, _ = ours(jnp.int32(0), jnp.float32(0.7))
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for index, name in enumerate(names):
        params, out = ours(jnp.int32(index), jnp.float32(1.3))
        want = _reference_forward(params, x, ACTIVATIONS[name])
        np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_noisy_labels_corrupt_p_times_one_minus_one_over_c():
    n, c = 20000, 10
    labels, idx = jnp.zeros((n,), jnp.int32), jnp.arange(n)
    f = jax.jit(lambda labels, idx, p: noisy_labels(jax.random.key(3), labels, idx, p, c))
    for p in (0.0, 0.3, 1.0):
        wrong = float(jnp.mean(f(labels, idx, p) != 0))
        want = p * (1 - 1 / c)
        assert abs(wrong - want) < 4 * np.sqrt(want * (1 - want) / n) + 1e-9
    # The draw is a function of (key, example) only: shuffling the batch permutes the labels.
    perm = np.random.default_rng(0).permutation(n)
    np.testing.assert_array_equal(f(labels[perm], idx[perm], 0.3), f(labels, idx, 0.3)[perm])


def test_task_label_noise_is_consistent_and_at_the_sampled_rate():
    fam = mlp_family(hidden=(8,), batch_size=256, subset_size=N_TRAIN,
                     label_noise_range=(0.4, 0.4))

    @jax.jit
    def draws(key):
        task = fam.task(fam.sample(jax.random.key(5)))
        keys = jax.random.split(key, 16)
        train = jax.vmap(lambda k: task.batch(k, "train"))(keys)
        valid = jax.vmap(lambda k: task.batch(k, "valid"))(keys)
        return train["idx"], train["y"], valid["idx"], valid["y"]

    idx, y, v_idx, v_y = (np.asarray(a).ravel() for a in draws(jax.random.key(6)))
    y_train, y_valid = DIGITS.splits["train"][1], DIGITS.splits["valid"][1]
    np.testing.assert_array_equal(v_y, y_valid[v_idx])  # validation labels are clean
    first = {}
    for i, label in zip(idx, y):
        assert first.setdefault(i, label) == label  # the same example keeps its (noisy) label
    unique = np.array(sorted(first))
    wrong = np.mean(np.array([first[i] for i in unique]) != y_train[unique])
    want = 0.4 * (1 - 1 / 10)
    assert unique.size > 1000
    assert abs(wrong - want) < 4 * np.sqrt(want * (1 - want) / unique.size)


def test_each_data_seed_trains_on_its_own_subset():
    fam = mlp_family(hidden=(8,), batch_size=128, subset_size=200, label_noise_range=(0.0, 0.0))

    @jax.jit
    def indices(cfg, key):
        task = fam.task(cfg)
        return jax.vmap(lambda k: task.batch(k, "train")["idx"])(jax.random.split(key, 16))

    cfg = MLPFamilyConfig(jnp.float32(0.0), jnp.int32(0), jnp.float32(0.0), jnp.uint32(7))
    key = jax.random.key(1)
    other_seed = cfg._replace(data_seed=jnp.uint32(8))
    other_rest = cfg._replace(log_init_scale=jnp.float32(1.0), activation=jnp.int32(1))
    a, b, c = (np.asarray(indices(x, key)) for x in (cfg, other_seed, other_rest))
    sa, sb = set(a.ravel().tolist()), set(b.ravel().tolist())
    # 2048 draws from a window of 200: every example seen w.p. 1 - 200 e^-10.24 > 0.99.
    assert len(sa) == 200 and len(sb) == 200
    assert len(sa & sb) < 200 and not np.array_equal(a, b)
    np.testing.assert_array_equal(a, c)  # only the data seed moves the subset


def test_mlp_family_bad_input():
    with pytest.raises(ValueError, match=r"hidden\[0\]: must be a positive integer \(>= 1\)"):
        mlp_family(hidden=(0,))
    with pytest.raises(ValueError, match=r"batch_size: 300 is larger than the 'train subset' "
                                         r"split \(256 examples\); allowed values are 1..256"):
        mlp_family(batch_size=300, subset_size=256)
    n = N_TRAIN
    with pytest.raises(ValueError, match=rf"subset_size: 2000 is larger than the 'train' split "
                                         rf"\({n} examples\); allowed values are 1..{n}"):
        mlp_family(subset_size=2000)
    with pytest.raises(ValueError, match=r"activations\[1\]: unknown value 'swish'; allowed"):
        mlp_family(activations=("relu", "swish"))
    with pytest.raises(ValueError, match=r"activations: must not be empty; allowed values"):
        mlp_family(activations=())
    with pytest.raises(ValueError, match=r"label_noise_range\[1\]: must be a number in \[0.0, 1"):
        mlp_family(label_noise_range=(0.0, 1.5))
    with pytest.raises(ValueError, match=r"init_scale_range: low 2.0 must not exceed high 1.0"):
        mlp_family(init_scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"init_scale_range\[0\]: must be a positive number"):
        mlp_family(init_scale_range=(0.0, 1.0))
