"""``metaopt eval SOURCE --suite NAME``: load the optimizers, run the suite, write the report."""

from __future__ import annotations

import pathlib
import time

from metaopt import pretrained
from metaopt.io.saved import describe_optimizer, load_optimizer, resolve
from metaopt.train import suite_eval, suite_report, suites


def learned(source) -> suite_eval.Learned:
    """The optimizer saved at ``source`` (checksum verified), as it was meta-trained."""
    saved = describe_optimizer(source)
    lopt, theta = load_optimizer(source)
    return suite_eval.Learned(lopt.optimizer, theta, saved.feed_valid_loss)


def label(source) -> str:
    """A short name for ``source``: the pretrained name, else the run directory's name."""
    if str(source) in pretrained.names():
        return str(source)
    p = pathlib.Path(source)
    return p.parent.name if p.is_file() else p.name


def eval_suite(source, suite: str, out_dir, *, seeds: int = 5, max_steps: int | None = None,
               baseline: str | None = "mlp_small_digits",
               tune_seeds: int = suite_eval.TUNE_SEEDS) -> int:
    entries = suites.get(suite)
    cands = {"learned": learned(source)}
    if baseline and baseline != "none":
        if resolve(baseline).resolve() != resolve(source).resolve():  # not SOURCE itself
            cands["baseline"] = learned(baseline)
        else:
            baseline = None
    else:
        baseline = None
    start = time.perf_counter()
    results = suite_eval.evaluate_suite(entries, cands, seeds=seeds, max_steps=max_steps,
                                         tune_seeds=tune_seeds)
    wall = time.perf_counter() - start
    text = suite_report.write(results, pathlib.Path(out_dir), source=label(source),
                              baseline=baseline, suite=suite, seeds=seeds, wall_s=wall)
    print(text)
    print(f"wrote {out_dir}/eval.md, eval.json and eval_curves.png ({wall:.0f} s)")
    return 0
