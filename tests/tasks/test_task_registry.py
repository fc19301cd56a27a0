"""tasks.make: every entry builds, data sets by name, and bad input names the field."""

import jax
import numpy as np
import pytest

from metaopt import tasks
from metaopt.tasks import Task, TaskFamily, make

N_TRAIN = tasks.load_digits().size("train")


def test_names_and_kinds():
    kinds = {name: type(make(name)) for name in tasks.names()}
    assert kinds == {
        "autoencoder_family": TaskFamily, "cnn_classifier": Task, "cnn_family": TaskFamily,
        "digits_cnn": Task, "digits_mlp": Task, "logistic_family": TaskFamily,
        "mlp_classifier": Task, "mlp_family": TaskFamily, "nqm": Task, "quadratic": TaskFamily,
        "sequence_family": TaskFamily, "teacher_student": TaskFamily, "mlp_regressor": Task,
        "test_function": Task,
        "gp_functions": TaskFamily,
        "least_squares": TaskFamily,
    }


def test_classifier_by_dataset_name_equals_direct_construction():
    by_name = make("mlp_classifier", dataset="digits", hidden=(16,), batch_size=64)
    direct = tasks.mlp_classifier(tasks.load_digits(), hidden=(16,), batch_size=64)

    @jax.jit
    def both(key):
        params = direct.init(key)
        b1, b2 = by_name.batch(key, "train"), direct.batch(key, "train")
        return b1["x"], b2["x"], by_name.loss(params, b2), direct.loss(params, b2)

    x1, x2, l1, l2 = both(jax.random.key(0))
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_allclose(l1, l2, rtol=1e-6)
    assert by_name.name == direct.name == "digits_mlp_64-16-10"


def test_nqm_entry_has_the_configured_spectrum():
    task = make("nqm", dim=4, min_curvature=0.01, max_curvature=1.0, init_mean=2.0)
    theta = task.init(jax.random.key(0))
    np.testing.assert_allclose(theta, 2.0)
    # metrics: 1/2 sum h theta^2 with h = 0.01, 0.0464, 0.215, 1.
    h = np.logspace(-2, 0, 4)
    np.testing.assert_allclose(task.metrics(theta, None)["excess_loss"], 2 * h.sum(), rtol=1e-5)


@pytest.mark.parametrize(
    ("name", "options", "pattern"),
    [
        ("resnet", {}, r"task: unknown task 'resnet'; allowed values are \['autoencoder_family', "
                   r"'cnn_classifier'"),
        ("nqm", {"lr": 0.1}, r"nqm.lr: unknown option 'lr'; allowed options are \['dim'"),
        ("mlp_classifier", {"data": None},
         r"mlp_classifier.data: unknown option 'data'; allowed options are \['dataset', "),
        ("mlp_classifier", {"dataset": "imagenet"},
         r"dataset: unknown data set 'imagenet'; allowed values are \['digits', 'mnist'"),
        ("mlp_family", {"dataset": "svhn"}, r"dataset: unknown data set 'svhn'; allowed values"),
        ("mlp_classifier", {"hidden": (32, -1)},
         r"hidden\[1\]: must be a positive integer \(>= 1\), got -1"),
        ("cnn_classifier", {"channels": (0,)}, r"channels\[0\]: must be a positive integer"),
        ("teacher_student", {"teacher_hidden": (0,)},
         r"teacher_hidden\[0\]: must be a positive integer \(>= 1\)"),
        ("mlp_family", {"hidden": (0,)}, r"hidden\[0\]: must be a positive integer \(>= 1\)"),
        ("mlp_classifier", {"batch_size": 0}, r"batch_size: must be a positive integer \(>= 1\)"),
        ("teacher_student", {"batch_size": -3}, r"batch_size: must be a positive integer"),
        ("mlp_family", {"batch_size": 0}, r"batch_size: must be a positive integer"),
        ("mlp_classifier", {"batch_size": 5000},
         rf"batch_size: 5000 is larger than the 'train' split \({N_TRAIN} examples\); "
         rf"allowed values are 1..{N_TRAIN}"),
        ("cnn_classifier", {"batch_size": 1000},
         r"batch_size: 1000 is larger than the 'valid' split \(\d+ examples\); allowed values"),
        ("mlp_family", {"batch_size": 600},
         r"batch_size: 600 is larger than the 'train subset' split \(512 examples\); allowed"),
        ("nqm", {"dim": 0}, r"dim: must be a positive integer \(>= 1\), got 0"),
        ("cnn_family", {"channels": ()}, r"channels: must not be empty"),
        ("cnn_family", {"head": "max"}, r"head: unknown value 'max'; allowed values are \['mean'"),
        ("cnn_family", {"activations": ("relu", "swish")},
         r"activations\[1\]: unknown value 'swish'; allowed values are \['relu'"),
        ("autoencoder_family", {"output": "tanh"}, r"output: unknown value 'tanh'; allowed"),
        ("autoencoder_family", {"bottleneck": 0}, r"bottleneck: must be a positive integer"),
        ("logistic_family", {"feature_scale_range": (1.0, 0.1)},
         r"feature_scale_range: low 1.0 must not exceed high 0.1"),
        ("logistic_family", {"label_noise_range": (0.0, 1.5)},
         r"label_noise_range\[1\]: must be a number in \[0.0, 1.0\], got 1.5"),
        ("sequence_family", {"cell": "lstm"}, r"cell: unknown value 'lstm'; allowed values are"),
        ("sequence_family", {"vocab_size": 1}, r"vocab_size: must be at least 2, got 1"),
        ("sequence_family", {"sharpness_range": (0.0, 1.0)},
         r"sharpness_range\[0\]: must be a positive number, got 0.0"),
    ],
)
def test_bad_input_names_the_field_and_allowed_values(name, options, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(name, **options)
