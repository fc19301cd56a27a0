"""Named run configs for ``metaopt train PRESET`` (nested specs, :mod:`metaopt.train.config`).

Each preset means what it meant as a flat config before 0.2 (same task, schedule, learned
optimizer, estimator, outer optimizer and run settings); only the random streams of a run
changed (:mod:`metaopt.train.loop`).
"""

from __future__ import annotations

from metaopt.config import Member, Mixture
from metaopt.spec import Spec, SpecError
from metaopt.train.config import RunConfig, RunSettings


def _pes(num_tasks: int, unroll_length: int, meta_loss: str = "train") -> Spec:
    """PES with sigma 0.01 weighing the training loss (every preset's estimator but one)."""
    return Spec("pes", {"num_tasks": num_tasks, "unroll_length": unroll_length, "sigma": 0.01,
                        "meta_loss": meta_loss})


ACTS = ("relu", "tanh", "gelu", "silu")  # elu is held out (metaopt.train.suites)


def _mlp(hidden, batch_size=128):
    return Spec("mlp_family", {"hidden": hidden, "batch_size": batch_size, "activations": ACTS,
                               "init_scale_range": (0.5, 2.0)})


#: The general-purpose meta-training distribution (pretrained ``norm_mlp_general``):
#: ``(member, weight, task spec)``: the ``log_train`` meta-loss puts the families' losses on
#: one (relative) scale; the quadratics weigh 0.3 (at weight 1 their large, consistent
#: log-loss gains dominated the outer gradient and made the MLP tasks worse). Held out of it
#: (:mod:`metaopt.train.suites`): the elu and sigmoid activations, MLPs wider than 256 or
#: deeper than 4, CNNs deeper than 2 conv layers, other data sets, 2-D test functions,
#: condition numbers above 1e3, budgets above 2,000.
GENERAL_MEMBERS = (
    ("mlp16", 1.0, _mlp((16,))),
    ("mlp64x2", 1.0, _mlp((64, 64))),
    ("mlp256", 1.0, _mlp((256,))),
    ("mlp32x4", 1.0, _mlp((32, 32, 32, 32))),
    ("cnn", 1.0, Spec("cnn_family", {"channels": (8, 16), "batch_size": 32,
                                     "activations": ACTS})),
    ("autoencoder", 1.0, Spec("autoencoder_family", {"activations": ACTS})),
    ("logistic", 1.0, Spec("logistic_family")),
    ("sequence", 1.0, Spec("sequence_family")),
    ("quadratic", 0.3, Spec("quadratic", {"dim": 20, "condition_range": (1.0, 1e3)})),
    ("nqm", 0.3, Spec("nqm", {"dim": 100})),
    ("teacher_student", 1.0, Spec("teacher_student")),
)


PRESETS: dict[str, RunConfig] = {
    # The README's main job: PES meta-trains the small per-parameter MLP optimizer on a family
    # of digits MLP tasks (random init scale, activation, label noise, data subset), < 5 min
    # on 2 CPU cores, then compares it with its untrained start and SGD.
    "quickstart": RunConfig(
        task=Spec("mlp_family", {"hidden": (32,), "batch_size": 128}),
        schedule=Spec("log_uniform", {"min_length": 50, "max_length": 200}),
        lopt=Spec("mlp_small"),
        estimator=_pes(8, 20),
        outer=Spec("adam", {"learning_rate": 3e-3}),
        run=RunSettings(outer_steps=300, clip_norm=1.0, checkpoint_every=50, log_every=10),
    ),
    # The Estimators issue's benchmark configuration, as a run.
    "pes_digits": RunConfig(
        task=Spec("digits_mlp", {"hidden": (32,), "batch_size": 128}),
        schedule=Spec("constant", {"length": 1000}),
        lopt=Spec("mlp"),
        estimator=_pes(16, 50),
        outer=Spec("adam", {"learning_rate": 1e-3}),
        run=RunSettings(outer_steps=500),
    ),
    "tbptt_digits": RunConfig(
        task=Spec("digits_mlp", {"hidden": (32,), "batch_size": 128}),
        schedule=Spec("constant", {"length": 1000}),
        lopt=Spec("mlp"),
        estimator=Spec("tbptt", {"num_tasks": 16, "unroll_length": 50, "meta_loss": "train"}),
        outer=Spec("adam", {"learning_rate": 1e-3}),
        run=RunSettings(outer_steps=500),
    ),
    # Metz et al. 2020 self-training: the learned optimizer trains its own theta after a
    # warm-up with Adam.
    "self_train": RunConfig(
        task=Spec("mlp_family"),
        schedule=Spec("log_uniform", {"min_length": 50, "max_length": 200}),
        lopt=Spec("mlp_small"),
        estimator=_pes(8, 20),
        outer=Spec("self", {"warmup_steps": 100, "warmup_learning_rate": 3e-3}),
        run=RunSettings(outer_steps=300),
    ),
    # The general-purpose learned optimizer shipped as pretrained ``norm_mlp_general``
    # (version 2). Version 1 (4 tasks per family, Adam 1e-3, 3,000 outer steps) drifted far
    # from its Adam-like start on noisy PES gradients and lost to its own untrained start on
    # deep and regression nets; 8 tasks per family and a 3x smaller outer rate for half the
    # steps keep the estimate less noisy and the walk short (experiments/general_optimizer).
    "general": RunConfig(
        task=Mixture(tuple(Member(n, w, t) for n, w, t in GENERAL_MEMBERS)),
        schedule=Spec("log_uniform", {"min_length": 100, "max_length": 2000}),
        lopt=Spec("norm_mlp", {"learning_rate": 3e-3}),
        estimator=_pes(8, 20, "log_train"),
        outer=Spec("adam", {"learning_rate": 3e-4}),
        run=RunSettings(outer_steps=1500, clip_norm=1.0, checkpoint_every=250, keep=20,
                        log_every=10),
    ),
    # Self-training experiment (experiments/self_training): norm_mlp on the digits MLP family;
    # Adam warm-up, then the learned optimizer trains its own theta for the remaining steps.
    "self_train_norm": RunConfig(
        task=_mlp((32,)),
        schedule=Spec("log_uniform", {"min_length": 100, "max_length": 500}),
        lopt=Spec("norm_mlp"),
        estimator=_pes(8, 20, "log_train"),
        outer=Spec("self", {"warmup_steps": 100, "warmup_learning_rate": 3e-3,
                            "num_steps": 300}),
        run=RunSettings(outer_steps=400, checkpoint_every=100),
    ),
    # Tiny configuration for tests and smoke runs.
    "smoke": RunConfig(
        task=Spec("digits_mlp", {"hidden": (16,), "batch_size": 32}),
        schedule=Spec("constant", {"length": 30}),
        lopt=Spec("mlp_small"),
        estimator=_pes(4, 10),
        outer=Spec("adam", {"learning_rate": 3e-3}),
        run=RunSettings(outer_steps=6, checkpoint_every=2, log_every=1),
    ),
}


def get(name: str) -> RunConfig:
    """The preset ``name`` (SpecError listing the presets otherwise)."""
    if name not in PRESETS:
        raise SpecError("preset", f"unknown preset {name!r}; allowed values are "
                        f"{sorted(PRESETS)}")
    return PRESETS[name]
