"""The fixed evaluation suites and ``metaopt eval SOURCE --suite``: divergence / blow-up
rules, best-learning-rate selection against brute force, the bar, suite disjointness."""

import json

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from metaopt.spec import Spec
from metaopt.tasks.base import Task
from metaopt.train import presets, suite_eval, suites
from metaopt.train.suite_eval import GRID, diverged, final_losses, late_blowup, select_best


def test_divergence_counts_nonfinite_and_runaway_runs_only():
    steps = 100
    fine = np.linspace(2.0, 0.1, steps)
    stuck = np.full(steps, 2.0)  # no progress is not divergence
    runaway = np.linspace(2.0, 4.5, steps)  # final 4.4 > 2 x initial 2.0
    nan_run = fine.copy()
    nan_run[40] = np.nan
    reset = fine.copy()  # finite curve, but the inner problem reported a non-finite reset
    curves = np.stack([fine, stuck, runaway, nan_run, reset])
    nonfinite = np.zeros_like(curves, bool)
    nonfinite[4, 60] = True
    assert diverged(curves, nonfinite).tolist() == [False, False, True, True, True]
    assert diverged(curves[:3]).tolist() == [False, False, True]
    assert final_losses(fine[None])[0] == pytest.approx(fine[-10:].mean())


def test_late_blowup_ignores_noise_but_flags_a_rise_after_the_minimum():
    steps = 1000
    rng = np.random.default_rng(0)
    down = np.geomspace(2.0, 0.01, steps)
    assert not late_blowup(down)
    assert not late_blowup(down * np.exp(rng.normal(0, 0.5, steps)))  # per-step noise
    rise = down.copy()
    rise[700:] = np.geomspace(0.01, 0.05, 300)  # back up 5x after reaching its lowest
    assert late_blowup(rise)
    assert late_blowup(np.where(np.arange(steps) > 900, np.nan, down))
    assert not late_blowup(np.where(np.arange(steps) > 950, down * 1.3, down))  # < 1.5x


def test_late_blowup_ignores_float32_round_off_at_zero_loss():
    """A cross-entropy that has reached zero in float32 flickers between 0 and one ulp-sized
    value (1.86e-10 on the digits MLP): ratios of such values are noise, not a blow-up; a rise
    of the same ratio at a resolvable loss level still is one."""
    steps, initial = 1000, np.log(10.0)
    q = 1.862645e-10  # the quantum seen on digits_mlp_10k_steps
    flicker = np.full(steps, q * 0.3)
    flicker[0] = initial
    flicker[-100:] = q  # 3.3x the lowest window, but 1.9e-10 - 5.6e-11 << eps32 * ln 10
    assert not late_blowup(flicker)
    resolvable = flicker * (1e-3 / q)  # the same shape from 3e-4 up to 1e-3: a real rise
    resolvable[0] = initial
    assert late_blowup(resolvable)


def test_best_lr_selection_equals_a_brute_force_loop_on_a_known_quadratic():
    """SGD with momentum on L(w) = 1/2 sum_i a_i w_i^2 (optimum 0 at w = 0): the vmapped grid
    gives each rate's curve of a plain numpy loop, and select_best picks the brute-force best
    among the rates that do not diverge (large rates do: a_max = 4)."""
    a = np.array([0.04, 0.3, 1.0, 4.0], np.float32)
    w0 = np.ones(4, np.float32)
    task = Task(init=lambda key: jnp.asarray(w0),
                loss=lambda w, b, hparams=None: 0.5 * jnp.sum(a * w * w),
                batch=lambda key, split: {}, name="known_quadratic")
    steps = 60
    r = suite_eval.runs(task, lambda lr: optax.sgd(lr, momentum=0.9),
                        jnp.asarray(GRID, jnp.float32), steps, 2, grid=True)
    brute = []
    for lr in GRID:  # the reference: SGD with momentum, loss recorded before each update
        w, m, curve = w0.astype(np.float64), np.zeros(4), []
        for _ in range(steps):
            curve.append(0.5 * np.sum(a * w * w))
            m = a * w + 0.9 * m
            w = w - lr * m
        brute.append(curve)
    brute = np.array(brute)
    ok = np.isfinite(brute).all(1) & (final_losses(brute) <= 2 * brute[:, 0])
    stable = np.flatnonzero(ok)
    assert 0 < len(stable) < len(GRID)  # some rates diverge, so the exclusion is exercised
    np.testing.assert_allclose(r["train"][stable, 0], brute[stable], rtol=2e-3, atol=1e-6)
    bad = diverged(r["train"], r["nonfinite"])
    assert bad.any(-1).tolist() == (~ok).tolist()
    best = select_best(final_losses(r["train"]), bad)
    assert best == stable[np.argmin(final_losses(brute[stable]))]
    assert final_losses(brute[best : best + 1])[0] < 1e-2 * brute[best, 0]  # near the optimum


def _row(learned, adam13, tuned, div=0, blow=False):
    def c(x, **kw):
        return {"final_train_loss": x, "diverged": 0, **kw}

    return {"optimizers": {"learned": c(learned, diverged=div, late_blowup=blow),
                           "adam_1e-3": c(adam13), "adam_tuned": c(tuned)}}


def test_summarize_gives_the_bar():
    results = {"a": _row(0.5, 1.0, 0.45), "b": _row(2.0, 1.0, 0.1, div=2),
               "c": _row(float("nan"), 1.0, 0.5, blow=True), "d": _row(0.11, 0.2, 0.1)}
    bar = suite_eval.summarize(results)
    assert bar["tasks"] == 4
    assert bar["beats_adam_1e-3"] == 0.5  # a, d
    assert bar["within_1.2x_tuned_adam"] == 0.5  # a (0.5 <= 0.54), d (0.11 <= 0.12)
    assert bar["tasks_with_divergence"] == 1 and bar["tasks_with_late_blowup"] == 1


def test_heldout_suite_is_outside_the_training_distribution_and_presets():
    held, train = suites.SUITES["heldout"], suites.SUITES["train"]
    assert len(held) >= 11 and len({e.label for e in held}) == len(held)
    assert not {e.label for e in held} & {e.label for e in train}
    preset_tasks = set()
    for cfg in presets.PRESETS.values():
        members = [spec for _, _, spec in cfg.members()]  # one, or a mixture's families
        assert all(isinstance(m, Spec) for m in members)
        preset_tasks |= {(m.name, json.dumps(m.to_json(), sort_keys=True)) for m in members}
    for e in held:
        assert (e.task.name, json.dumps(e.task.to_json(), sort_keys=True)) not in preset_tasks \
            or e.steps > suites.TRAINING_DISTRIBUTION["max_steps"], e.label
        assert not suites.in_training_distribution(e), e.label
    for e in train:  # the predicate is not vacuous: the train suite lies inside
        assert suites.in_training_distribution(e), e.label
    assert sum(e.steps == suites.DEFAULT_STEPS for e in held) >= len(held) - 1
    from metaopt import tasks

    for e in (*held, *train):
        tasks.REGISTRY.resolve(e.task.name, e.task.options)  # every spec validates


@pytest.mark.slow
def test_cli_heldout_suite_smoke_writes_the_three_files(tmp_path):
    from metaopt.cli import main

    out = tmp_path / "ev"
    assert main(["eval", "mlp_small_digits", "--suite", "heldout", "--max-steps", "12",
                 "--seeds", "2", "--out", str(out)]) == 0
    files = sorted(p.name for p in (out / "heldout").iterdir())
    assert files == ["eval.json", "eval.md", "eval_curves.png"]
    data = json.loads((out / "heldout" / "eval.json").read_text())
    assert set(data["tasks"]) == {e.label for e in suites.HELDOUT}
    row = data["tasks"]["rosenbrock_2d"]["optimizers"]
    assert set(row) == {"learned", "adam_1e-3", "adam_tuned", "sgdm_tuned"}  # no baseline:
    assert len(row["learned"]["train_curve"]) == 12  # SOURCE is the baseline entry itself
    assert "## Bar" in (out / "heldout" / "eval.md").read_text()
    # Reusing the baseline columns gives the report a full re-run gives, learned column
    # re-run: every column's numbers equal the first report's (the runs are deterministic).
    again = tmp_path / "again"
    assert main(["eval", "mlp_small_digits", "--suite", "heldout", "--max-steps", "12",
                 "--seeds", "2", "--out", str(again), "--reuse-baselines",
                 str(out / "heldout" / "eval.json")]) == 0
    second = json.loads((again / "heldout" / "eval.json").read_text())
    assert second["reused_from"] == str(out / "heldout" / "eval.json")
    for label, r in data["tasks"].items():
        for col, o in r["optimizers"].items():
            got = second["tasks"][label]["optimizers"][col]
            assert got["final_train_loss"] == pytest.approx(o["final_train_loss"], rel=1e-6,
                                                            nan_ok=True), (label, col)
    assert main(["eval", "mlp_small_digits", "--suite", "heldout", "--max-steps", "12",
                 "--seeds", "3", "--out", str(tmp_path / "x"), "--reuse-baselines",
                 str(out / "heldout" / "eval.json")]) == 2  # other seeds: not reusable


def _report(tmp_path, **fields):
    entries = {e.label: {"task": e.task.to_json(), "steps": e.steps, "initial_loss": 1.0,
                         "optimizers": {c: {"final_train_loss": 1.0, "train_curve": [1.0]}
                                        for c in (*suite_eval.BASELINE_COLUMNS, "baseline")}}
               for e in suites.HELDOUT}
    data = {"suite": "heldout", "seeds": 5, "tune_seeds": 2, "max_steps": None,
            "baseline": "mlp_small_digits", "tasks": entries, **fields}
    file = tmp_path / "eval.json"
    file.write_text(json.dumps(data))
    return file


def test_reused_baselines_must_come_from_the_same_suite_seeds_and_tuning(tmp_path):
    from metaopt.spec import SpecError
    from metaopt.train.suite_cli import load_reuse

    want = {"suite": "heldout", "seeds": 5, "tune_seeds": 2, "max_steps": None,
            "baseline": "mlp_small_digits"}
    got = load_reuse(_report(tmp_path), **want)
    assert set(got) == {e.label for e in suites.HELDOUT}
    for field, other in (("seeds", 3), ("tune_seeds", 1), ("max_steps", 12),
                         ("baseline", None)):
        with pytest.raises(SpecError, match=f"reuse_baselines: .*{field}="):
            load_reuse(_report(tmp_path), **{**want, field: other})
    with pytest.raises(SpecError, match="does not record 'tune_seeds'"):
        load_reuse(_old(tmp_path), **want)
    bad = json.loads(_report(tmp_path).read_text())
    bad["tasks"]["iris_mlp"]["steps"] = 999
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(SpecError, match="'iris_mlp' differs"):
        load_reuse(tmp_path / "bad.json", **want)
    with pytest.raises(SpecError, match="cannot read"):
        load_reuse(tmp_path / "missing.json", **want)


def _old(tmp_path):
    data = json.loads(_report(tmp_path).read_text())
    del data["tune_seeds"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    return tmp_path / "old.json"
