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


def load_reuse(file, *, suite: str, seeds: int, tune_seeds: int, max_steps: int | None,
               baseline: str | None) -> dict:
    """The per-task entries of the earlier report ``file`` (an ``eval.json``), checked to be of
    the same suite, tasks, budgets, seeds, tuning and baseline (a :class:`SpecError` naming the
    first field that differs otherwise): label -> entry, for
    :func:`metaopt.train.suite_eval.evaluate_suite`'s ``reuse``."""
    import json

    from metaopt.spec import SpecError

    key = "reuse_baselines"
    path = pathlib.Path(file)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SpecError(key, f"cannot read {path} as an eval.json: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise SpecError(key, f"{path} is not an eval.json of a suite evaluation (no 'tasks')")
    want = {"suite": suite, "seeds": seeds, "tune_seeds": tune_seeds, "max_steps": max_steps,
            "baseline": baseline}
    for field, value in want.items():
        if field not in data:
            raise SpecError(key, f"{path} does not record {field!r} (written by an older "
                            f"version?); it cannot be checked, so it is not reused")
        if data[field] != value:
            raise SpecError(key, f"{path} has {field}={data[field]!r}, this evaluation "
                            f"{field}={value!r}")
    out = {}
    for entry in suites.get(suite):
        got = data["tasks"].get(entry.label)
        steps = min(entry.steps, max_steps or entry.steps)
        if got is None:
            raise SpecError(key, f"{path} has no task {entry.label!r}")
        if got.get("task") != json.loads(json.dumps(entry.task.to_json())) or \
                got.get("steps") != steps:
            raise SpecError(key, f"{path}: task {entry.label!r} differs from the suite's "
                            f"(spec or step budget)")
        missing = [c for c in suite_eval.BASELINE_COLUMNS
                   + (("baseline",) if baseline else ()) if c not in got["optimizers"]]
        if missing:
            raise SpecError(key, f"{path}: task {entry.label!r} lacks columns {missing}")
        out[entry.label] = got
    return out


def eval_suite(source, suite: str, out_dir, *, seeds: int = 5, max_steps: int | None = None,
               baseline: str | None = "mlp_small_digits",
               tune_seeds: int = suite_eval.TUNE_SEEDS, reuse_baselines=None) -> int:
    entries = suites.get(suite)
    cands = {"learned": learned(source)}
    if baseline and baseline != "none":
        if resolve(baseline).resolve() != resolve(source).resolve():  # not SOURCE itself
            cands["baseline"] = learned(baseline)
        else:
            baseline = None
    else:
        baseline = None
    reuse = None if reuse_baselines is None else load_reuse(
        reuse_baselines, suite=suite, seeds=seeds, tune_seeds=tune_seeds, max_steps=max_steps,
        baseline=baseline)
    start = time.perf_counter()
    results = suite_eval.evaluate_suite(entries, cands, seeds=seeds, max_steps=max_steps,
                                         tune_seeds=tune_seeds, reuse=reuse)
    wall = time.perf_counter() - start
    text = suite_report.write(results, pathlib.Path(out_dir), source=label(source),
                              baseline=baseline, suite=suite, seeds=seeds, wall_s=wall,
                              tune_seeds=tune_seeds, max_steps=max_steps,
                              reused_from=None if reuse is None else str(reuse_baselines))
    print(text)
    print(f"wrote {out_dir}/eval.md, eval.json and eval_curves.png ({wall:.0f} s)")
    return 0
