"""Pretrained learned optimizers shipped with the package.

Each entry is a folder ``metaopt/pretrained/<name>/`` holding ``optimizer.msgpack`` (the
self-describing saved optimizer of :mod:`metaopt.io.saved`: spec with every option, trained
step budget, whether it reads the validation loss, provenance, flax-msgpack weights and their
checksum), ``config.json`` (the run config it was meta-trained with) and ``eval.md`` (the
evaluation it was accepted on). Everything that takes a saved optimizer also takes a
pretrained name: ``metaopt eval NAME``, ``outer.name=frozen outer.source=NAME``, and::

    opt, theta = metaopt.load_optimizer("mlp_small_digits")
    tx = opt.optimizer(theta)          # an optax transform, in place of optax.adam(...)
    tx = metaopt.pretrained.optax("mlp_small_digits", num_steps=1000)   # the same, in one call

Loading verifies the file's SHA-256 (description and weights); a modified, truncated or
otherwise corrupt file raises :class:`~metaopt.spec.SpecError` naming the file.

Entries:

* ``norm_mlp_general`` -- the general-purpose optimizer (version 2, 2026-12-01): ``norm_mlp``
  (learning_rate 3e-3 at the start) meta-trained by ``metaopt train general`` (PES with the
  ``log_train`` meta-objective on a mixture of 11 task families -- digits MLPs of widths 16-256
  and depths 1-4, CNNs, an autoencoder, logistic regression, a tiny RNN, quadratics, the NQM,
  teacher-student -- 8 task pairs per family, truncations of 20 steps of log-uniform 100-2,000
  step episodes, 1,500 outer steps of Adam 3e-4, seed 0: 46 minutes on the shared 2-core
  development machine). Step budget 2,000; pass yours as ``num_steps``. Its held-out
  evaluation (``metaopt eval norm_mlp_general --suite heldout --tune-seeds 2``) is its
  ``eval.md``; ``experiments/general_optimizer`` compares it with its untrained start and
  version 1.
* ``mlp_small_digits`` -- ``mlp_small`` (default options) meta-trained by
  ``metaopt train quickstart`` (PES, 300 outer steps on the digits MLP family, seed 0;
  train-loss meta-objective over log-uniform 50-200 step episodes: step budget 200, no
  validation-loss input). It was trained before metaopt 0.2 changed the run's random streams
  (init, theta and step keys are now disjoint splits of the seed), so rerunning the quickstart
  today gives a different (equally good) theta; its weights are unchanged, byte for byte.
"""

from __future__ import annotations

import pathlib

ROOT = pathlib.Path(__file__).parent
FILE = "optimizer.msgpack"  # = metaopt.io.saved.FILE


def names() -> list[str]:
    """The pretrained entries, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if (p / FILE).exists())


def path(name: str) -> pathlib.Path:
    """The folder of the pretrained entry ``name``."""
    if name not in names():
        from metaopt.spec import SpecError

        raise SpecError("pretrained", f"unknown name {name!r}; allowed values are {names()}")
    return ROOT / name


def load(name: str):
    """``(lopt, theta)`` of the pretrained entry ``name`` (:func:`metaopt.load_optimizer`)."""
    from metaopt.io.saved import load_optimizer

    return load_optimizer(path(name))


def trained_budget(name: str) -> int:
    """The step budget the entry ``name`` was meta-trained for (its longest episode)."""
    from metaopt.io.saved import describe_optimizer

    return describe_optimizer(path(name)).num_steps


def optax(name: str, num_steps: int | None = None):
    """The pretrained learned optimizer ``name`` as an ``optax.GradientTransformationExtraArgs``
    with its weights bound: a drop-in for ``optax.adam(...)`` in an ordinary training loop::

        tx = metaopt.pretrained.optax("mlp_small_digits", num_steps=1000)
        opt_state = tx.init(params)
        updates, opt_state = tx.update(grads, opt_state, params, loss=loss)
        params = optax.apply_updates(params, updates)

    ``num_steps`` is the number of updates you will make (the optimizer's features read the
    fraction of the budget done); default :func:`trained_budget`. Pass ``loss=`` (the training
    loss of the batch) to ``update``: optimizers that read it raise
    :class:`~metaopt.lopt.MissingExtraArgError` without it, the others ignore it.
    """
    from metaopt.io.saved import check_budget

    lopt, theta = load(name)
    if num_steps is None:
        return lopt.optimizer(theta)
    return lopt.optimizer(theta, num_steps=check_budget(num_steps))
