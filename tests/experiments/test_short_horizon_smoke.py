"""Smoke version of experiments/short_horizon_bias: on the exact NQM, schedules tuned for a
short horizon decay faster than those tuned for a long one, and end worse at the long horizon
(Wu, Ren, Liao & Grosse 2018); the full command, at a tiny budget, is a slow test."""

import json

import jax
import pytest


def test_short_horizon_bias_direction_on_the_exact_nqm():
    from experiments.hypergrad_common import FAST_COMPILE
    from experiments.short_horizon_bias import nqm_part as npt
    from metaopt.tasks import nqm_schedules as ns

    # (a) per-step-flexible SGD schedules: at step 20 the horizon-20 optimum has decayed far
    # below the horizon-200 optimum, and greedy decays faster still
    cfg = npt.config(True, dim=20)
    opt = {h: jax.jit(lambda c, h=h: ns.horizon_optimal_schedule(c, h, num_knots=6, steps=60),
                      compiler_options=FAST_COMPILE)(cfg)
           for h in (20, 200)}
    assert float(opt[20].lrs[-1]) < 0.5 * float(opt[200].lrs[19])
    greedy_lrs, greedy_losses = jax.jit(ns.greedy_schedule, static_argnums=1,
                                        compiler_options=FAST_COMPILE)(cfg, 200)
    assert float(greedy_lrs[19]) < float(opt[200].lrs[19])
    assert float(greedy_losses[-1]) > 1.5 * float(opt[200].losses[-1])


@pytest.mark.slow
def test_parametric_schedule_direction_on_the_exact_nqm():
    from experiments.hypergrad_common import FAST_COMPILE
    from experiments.short_horizon_bias import nqm_part as npt

    # (b) the parametric schedule a_0 (1 + k/K)^-beta, momentum 0.9, tuned by its exact
    # hypergradient: tuned at 20 it has a smaller rate at step 200 and a worse loss there
    rows = npt.part_b((20, 200), steps=40, lr=0.1, compiler_options=FAST_COMPILE)
    assert rows[20]["eff_lr_at"][200] < rows[200]["eff_lr_at"][200]
    assert rows[20]["loss_at_long"] > rows[200]["loss_at_long"]


@pytest.mark.slow
def test_short_horizon_cli_smoke(tmp_path):
    from experiments.short_horizon_bias import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "short_horizon.png").stat().st_size > 0
    saved = json.loads((tmp_path / "short_horizon.json").read_text())
    assert set(saved["c_nqm"]) == {"TBPTT", "greedy γ=0.9", "greedy γ=0.99", "greedy γ=0.999",
                                   "PES", "RMD (full)"}
    assert len(saved["c_digits"]["PES"]["thetas"]) == 2
    assert "### (c) Estimators at equal compute" in (tmp_path / "short_horizon.md").read_text()
