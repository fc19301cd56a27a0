"""Pretrained learned optimizers shipped with the package.

Each entry is a minimal run directory ``metaopt/pretrained/<name>/`` (``config.json`` naming
the learned optimizer, ``theta.msgpack`` flax-msgpack weights, ``theta.sha256``, and
``eval.md`` with the evaluation it was accepted on), so everything that takes a run directory
also takes a pretrained name: ``metaopt eval NAME``, ``outer_optimizer=frozen
frozen_from=NAME``, and in Python::

    opt, theta = metaopt.pretrained.load("mlp_small_digits")
    tx = opt.optimizer(theta)          # an optax transform, in place of optax.adam(...)

Entries:

* ``mlp_small_digits`` -- ``mlp_small`` meta-trained by ``metaopt train quickstart`` (PES, 300
  outer steps on the digits MLP family, seed 0; train-loss meta-objective over 50-200 step
  episodes).
"""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).parent


def names() -> list[str]:
    """The pretrained entries, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "theta.msgpack").exists())


def path(name: str) -> pathlib.Path:
    """The run directory of the pretrained entry ``name``."""
    if name not in names():
        raise ValueError(f"pretrained: unknown name {name!r}; allowed values are {names()}")
    return ROOT / name


def resolve(run_dir_or_name: str) -> pathlib.Path:
    """A run directory given either as a path or as a pretrained name (paths win)."""
    p = pathlib.Path(run_dir_or_name)
    if p.is_dir() or run_dir_or_name not in names():
        return p
    return ROOT / run_dir_or_name


def load(name: str):
    """``(lopt, theta)`` of the pretrained entry ``name``."""
    from metaopt.train.artifacts import load_learned_optimizer

    return load_learned_optimizer(path(name))
