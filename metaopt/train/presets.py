"""Named, typed, frozen outer-training configurations for ``metaopt train PRESET``."""

from __future__ import annotations

from metaopt.train.config import TrainConfig

PRESETS: dict[str, TrainConfig] = {
    # The README's main job: PES meta-trains the small per-parameter MLP optimizer on a family
    # of digits MLP tasks (random init scale, activation, label noise, data subset), < 5 min
    # on 2 CPU cores, then compares it with its untrained start and SGD.
    "quickstart": TrainConfig(
        task="mlp_family", hidden=(32,), batch_size=128, episode_length=200,
        min_episode_length=50, schedule="log_uniform", meta_loss="train", lopt="mlp_small",
        estimator="pes", num_tasks=8, truncation=20, sigma=0.01, outer_optimizer="adam",
        outer_lr=3e-3, clip_norm=1.0, outer_steps=300, checkpoint_every=50, log_every=10,
    ),
    # The Estimators issue's benchmark configuration, as a run.
    "pes_digits": TrainConfig(
        task="digits_mlp", hidden=(32,), batch_size=128, episode_length=1000,
        schedule="constant", meta_loss="train", lopt="mlp", estimator="pes", num_tasks=16,
        truncation=50, sigma=0.01, outer_optimizer="adam", outer_lr=1e-3, outer_steps=500,
    ),
    "tbptt_digits": TrainConfig(
        task="digits_mlp", hidden=(32,), batch_size=128, episode_length=1000,
        schedule="constant", meta_loss="train", lopt="mlp", estimator="tbptt", num_tasks=16,
        truncation=50, outer_optimizer="adam", outer_lr=1e-3, outer_steps=500,
    ),
    # Metz et al. 2020 self-training: the learned optimizer trains its own theta after a
    # warm-up with Adam.
    "self_train": TrainConfig(
        task="mlp_family", lopt="mlp_small", estimator="pes", num_tasks=8, truncation=20,
        episode_length=200, schedule="log_uniform", min_episode_length=50,
        outer_optimizer="self", self_warmup_steps=100, outer_steps=300,
    ),
    # Tiny configuration for tests and smoke runs.
    "smoke": TrainConfig(
        task="digits_mlp", hidden=(16,), batch_size=32, episode_length=30, min_episode_length=10,
        schedule="constant", meta_loss="train", lopt="mlp_small", estimator="pes", num_tasks=4,
        truncation=10, outer_steps=6, checkpoint_every=2, log_every=1,
    ),
}


def get(name: str) -> TrainConfig:
    from metaopt.config import ConfigError

    if name not in PRESETS:
        raise ConfigError("preset", f"unknown preset {name!r}; allowed values are "
                          f"{sorted(PRESETS)}")
    return PRESETS[name]
