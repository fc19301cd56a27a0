"""Fixed evaluation suites for learned optimizers: ``SUITES = {"heldout": [...], "train": [...]}``.

Each entry is a :class:`SuiteTask`: a label, a task spec of :data:`metaopt.tasks.REGISTRY`
and a step budget (``batch`` is the spec's ``batch_size``; ``None`` for deterministic tasks).
``metaopt eval SOURCE --suite heldout`` trains every entry with the learned optimizer and the
baselines (:mod:`metaopt.train.suite_eval`).

**heldout** holds tasks *outside* the meta-training distribution of the general-purpose
optimizer (:data:`TRAINING_DISTRIBUTION`; :func:`in_training_distribution` checks it): wider,
deeper, other activations, deeper CNNs, other data sets (scikit-learn, offline), a non-convex
2-D function, a worse-conditioned quadratic, a 5x longer budget and a 4x smaller batch. Do not
meta-train on any of them. **train** is a handful of tasks from inside that distribution (a
sanity check: a learned optimizer should do well there).
"""

from __future__ import annotations

from typing import NamedTuple

from metaopt.spec import Spec

DEFAULT_STEPS = 1000


class SuiteTask(NamedTuple):
    """One suite entry: ``label``, ``task`` (a registry spec) and ``steps`` (its budget)."""

    label: str
    task: Spec
    steps: int = DEFAULT_STEPS

    @property
    def batch(self) -> int | None:
        """The batch size (``None``: a deterministic task without data batches)."""
        return self.task.options.get("batch_size")


def _digits_mlp(hidden, **options) -> Spec:
    return Spec("digits_mlp", {"hidden": tuple(hidden), "batch_size": 128, **options})


HELDOUT: tuple[SuiteTask, ...] = (
    SuiteTask("digits_mlp_wide512", _digits_mlp((512,))),
    SuiteTask("digits_mlp_deep6", _digits_mlp((32,) * 6)),  # the old optimizer collapsed here
    SuiteTask("digits_mlp_sigmoid", _digits_mlp((64,), activation="sigmoid")),
    SuiteTask("digits_cnn_4conv", Spec("digits_cnn", {"channels": (8, 8, 16, 16),
                                                      "batch_size": 128})),
    SuiteTask("iris_mlp", Spec("mlp_classifier", {"dataset": "iris", "hidden": (32,),
                                                  "batch_size": 16})),
    SuiteTask("wine_mlp", Spec("mlp_classifier", {"dataset": "wine", "hidden": (32,),
                                                  "batch_size": 32})),
    SuiteTask("breast_cancer_mlp", Spec("mlp_classifier", {"dataset": "breast_cancer",
                                                           "hidden": (32,), "batch_size": 64})),
    SuiteTask("sk_classification_mlp", Spec("mlp_classifier", {
        "dataset": "sk_classification", "hidden": (64, 64), "batch_size": 128})),
    SuiteTask("sk_regression_mlp", Spec("mlp_regressor", {
        "dataset": "sk_regression", "hidden": (64, 64), "batch_size": 128})),
    SuiteTask("rosenbrock_2d", Spec("test_function", {"function": "rosenbrock"})),
    SuiteTask("quadratic_cond1e4", Spec("quadratic", {"dim": 50, "condition_number": 1e4})),
    SuiteTask("digits_mlp_10k_steps", _digits_mlp((32,)), steps=10_000),
    SuiteTask("digits_mlp_batch32", Spec("digits_mlp", {"hidden": (64,), "batch_size": 32})),
)

TRAIN: tuple[SuiteTask, ...] = (
    SuiteTask("digits_mlp_32", _digits_mlp((32,))),
    SuiteTask("digits_mlp_64x64", _digits_mlp((64, 64))),
    SuiteTask("digits_logistic", _digits_mlp(())),
    SuiteTask("digits_cnn_2conv", Spec("digits_cnn", {"channels": (16, 32), "batch_size": 128})),
    SuiteTask("quadratic_20d_cond100", Spec("quadratic", {"dim": 20, "condition_number": 100.0})),
    SuiteTask("teacher_student", Spec("teacher_student", {})),
)

SUITES: dict[str, tuple[SuiteTask, ...]] = {"heldout": HELDOUT, "train": TRAIN}

#: The meta-training distribution of the general-purpose learned optimizer (what the held-out
#: suite must stay outside of), as :func:`in_training_distribution` reads it.
TRAINING_DISTRIBUTION = {
    "digits_mlp": {"widths": (16, 256), "depths": (0, 4), "batch_size": 128,
                   "activations": ("relu", "tanh", "gelu", "silu")},  # depth 0: logistic
    "digits_cnn": {"conv_layers": (1, 2), "batch_size": 128},
    "quadratic": {"dims": (10, 100), "max_condition": 1e3},
    "any": ("teacher_student", "nqm", "mlp_family", "autoencoder_family", "sequence_family",
            "logistic_family", "cnn_family"),
    "max_steps": 2000,
}


def names() -> list[str]:
    return sorted(SUITES)


def get(name: str) -> tuple[SuiteTask, ...]:
    """The suite ``name`` (SpecError listing the suites otherwise)."""
    from metaopt.spec import SpecError

    if name not in SUITES:
        raise SpecError("suite", f"unknown suite {name!r}; allowed values are {names()}")
    return SUITES[name]


def in_training_distribution(entry: SuiteTask) -> bool:
    """Whether ``entry`` lies inside :data:`TRAINING_DISTRIBUTION` (task spec and budget)."""
    d, o = TRAINING_DISTRIBUTION, entry.task.options
    if entry.steps > d["max_steps"]:
        return False
    name = entry.task.name
    if name in ("mlp_classifier", "cnn_classifier"):
        if o.get("dataset", "digits") != "digits":
            return False
        name = "digits_" + name.split("_")[0]
    if name in d["any"]:
        return True
    if name == "digits_mlp":
        m, hidden = d["digits_mlp"], tuple(o.get("hidden", (32,)))
        return (m["depths"][0] <= len(hidden) <= m["depths"][1]
                and all(m["widths"][0] <= w <= m["widths"][1] for w in hidden)
                and o.get("batch_size", 128) == m["batch_size"]
                and o.get("activation", "relu") in m["activations"])
    if name == "digits_cnn":
        c = d["digits_cnn"]
        return (c["conv_layers"][0] <= len(o.get("channels", (16, 32))) <= c["conv_layers"][1]
                and o.get("batch_size", 128) == c["batch_size"])
    if name == "quadratic":
        q = d["quadratic"]
        return (q["dims"][0] <= o.get("dim", 10) <= q["dims"][1]
                and o.get("condition_number", 10.0) <= q["max_condition"])
    return False
