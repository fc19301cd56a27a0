"""The run config: nested, typed, frozen specs, one per concept.

=============  ======================================================  =======================
section        what                                                    resolved through
=============  ======================================================  =======================
``task``       a task / family, or a weighted mixture of families      ``metaopt.tasks``
``schedule``   episode lengths (the step budget is its maximum)        ``inner.truncation``
``inner``      the inner problem's settings: ``feed_valid_loss``       (settings)
``lopt``       the learned optimizer being meta-trained                ``metaopt.lopt``
``estimator``  the outer-gradient estimator (its ``meta_loss``: which  ``metaopt.estimators``
               objective it weighs, train / valid / last)
``outer``      the outer optimizer                                     ``metaopt.outer_optimizers``
``run``        outer steps, seed, clip_norm, checkpoints, keep,        (settings)
               log interval, devices
=============  ======================================================  =======================

Two separate settings: ``estimator.meta_loss`` says which objective the estimator weighs;
``inner.feed_valid_loss`` whether the learned optimizer is given the validation loss as an
input (the saved optimizer records it, and evaluation feeds it exactly then). The inner problem
measures validation losses when either needs them.

``RunConfig(...)`` resolves every section at construction (defaults filled, types checked,
:class:`~metaopt.spec.SpecError` naming the dotted key); :func:`metaopt.train.build.validate`
then checks the values by building the pieces. ``config.json`` in a run directory is
:meth:`RunConfig.to_json`; the command line edits it with dotted overrides
(:func:`metaopt.config.apply_overrides`, :meth:`RunConfig.with_overrides`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from metaopt import estimators, lopt, outer_optimizers, tasks
from metaopt.config import Mixture, MixtureSection, SettingsSection, SpecSection, apply_overrides
from metaopt.inner import truncation
from metaopt.spec import Spec, SpecError

FORMAT = "metaopt.run/2"


@dataclasses.dataclass(frozen=True)
class InnerSettings:
    """``feed_valid_loss``: give the learned optimizer the validation loss as the
    ``valid_loss`` extra arg (``inner_problem(..., feed_valid_loss=...)``)."""

    feed_valid_loss: bool = False


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The run's own settings. ``clip_norm``: outer-gradient clipping (0 disables);
    ``devices``: devices the task batch is split over (0: all; on CPU the command exposes
    ``devices=N`` CPU devices, 0: one per core); ``max_skipped``: stop the run (exit 1) once this
    many consecutive logged outer steps had no usable outer gradient (non-finite, or every
    task masked as non-finite, as with a far too large ``estimator.sigma``); 0 never stops."""

    outer_steps: int = 200
    seed: int = 0
    clip_norm: float = 1.0
    checkpoint_every: int = 50
    keep: int = 3
    log_every: int = 10
    devices: int = 1
    max_skipped: int = 10


SECTIONS = {
    "task": MixtureSection(SpecSection(tasks.REGISTRY)),
    "schedule": SpecSection(truncation.REGISTRY,
                            fallbacks={"length": 200, "min_length": 20, "max_length": 200}),
    "inner": SettingsSection(InnerSettings),
    "lopt": SpecSection(lopt.REGISTRY),
    "estimator": SpecSection(estimators.REGISTRY, hidden=("axis_name",),
                             fallbacks={"num_tasks": 8, "sigma": 0.01, "unroll_length": 20,
                                        "gamma": 0.9}),
    "outer": SpecSection(outer_optimizers.REGISTRY),
    "run": SettingsSection(RunSettings),
}

#: keys of the flat pre-0.2 config, for "did you mean" hints
FLAT_KEYS = {
    "hidden": "task.hidden", "batch_size": "task.batch_size",
    "episode_length": "schedule.length or schedule.max_length",
    "min_episode_length": "schedule.min_length", "meta_loss": "estimator.meta_loss",
    "num_tasks": "estimator.num_tasks", "truncation": "estimator.unroll_length",
    "sigma": "estimator.sigma", "outer_optimizer": "outer.name",
    "outer_lr": "outer.learning_rate", "self_warmup_steps": "outer.warmup_steps",
    "frozen_from": "outer.source", "clip_norm": "run.clip_norm",
    **{k: f"run.{k}" for k in ("outer_steps", "seed", "checkpoint_every", "keep", "log_every",
                              "devices", "max_skipped")},
}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One outer-training run (module docstring); sections accept a Spec, a registry name,
    or their JSON form, and are resolved at construction."""

    task: Spec | Mixture
    schedule: Spec
    lopt: Spec
    estimator: Spec
    outer: Spec
    inner: InnerSettings = InnerSettings()
    run: RunSettings = RunSettings()

    def __post_init__(self):
        for name, section in SECTIONS.items():
            object.__setattr__(self, name, section.resolve(name, getattr(self, name)))

    def to_json(self) -> dict[str, Any]:
        """The nested JSON form (``config.json``)."""
        return {"format": FORMAT, **{name: section.to_json(getattr(self, name))
                                     for name, section in SECTIONS.items()}}

    @classmethod
    def from_json(cls, data: Any) -> RunConfig:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise SpecError("config", f"not a run config of this version (format {FORMAT!r})")
        missing = [s for s in SECTIONS if s not in data]
        unknown = [s for s in data if s not in SECTIONS and s != "format"]
        if missing or unknown:
            key = (unknown or missing)[0]
            raise SpecError(key, f"{'unknown' if unknown else 'missing'} section; the sections "
                            f"are {list(SECTIONS)}")
        return cls(**{s: data[s] for s in SECTIONS})

    def with_overrides(self, overrides: Sequence[str]) -> RunConfig:
        """This config with dotted ``key=value`` overrides (:mod:`metaopt.config`)."""
        if not overrides:
            return self
        return RunConfig.from_json(apply_overrides(self.to_json(), overrides, SECTIONS,
                                                   FLAT_KEYS))

    def members(self) -> tuple[tuple[str, float, Spec], ...]:
        """``(name, weight, task spec)`` per task family (one for a single task)."""
        if isinstance(self.task, Mixture):
            return tuple((m.member, m.weight, m.task) for m in self.task.members)
        return ((self.task.name, 1.0, self.task),)

    @property
    def meta_loss(self) -> str:
        """What the estimator weighs: its ``meta_loss`` option ("valid" for the
        hypergradients, which weigh the validation loss by definition)."""
        return self.estimator.options.get("meta_loss", "valid")

    @property
    def budget(self) -> int:
        """The step budget the learned optimizer is meta-trained for: the longest episode."""
        return truncation.REGISTRY.make(self.schedule).max_length


def diff(a: RunConfig, b: RunConfig, ignore: Sequence[str] = ()) -> list[str]:
    """Dotted keys where ``a`` and ``b`` differ (``ignore``: keys that may)."""
    out = []

    def walk(x, y, key):
        if isinstance(x, dict) and isinstance(y, dict):
            for k in dict.fromkeys([*x, *y]):
                walk(x.get(k), y.get(k), f"{key}.{k}" if key else k)
        elif x != y and key not in ignore:
            out.append(key)

    walk(a.to_json(), b.to_json(), "")
    return out
