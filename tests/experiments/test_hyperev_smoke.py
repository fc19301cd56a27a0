"""Smoke versions of the hypernetwork and gradient-descent-evidence experiments (tiny budgets,
fast compiles): the direction of each result."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import hypergrad_common as common


def test_hypernet_tuned_lambda_lies_in_grid_best_interval():
    """Lorraine & Duvenaud's global best-response hypernetwork (2,000 steps) tunes the L2
    strength on digits (50 training images) to within the grid's best interval."""
    from experiments.hypernetworks import best_response as br
    from experiments.hypernetworks import run

    data = run.subset(run.digits_flat(), 3)

    def f(data, key):
        val, _ = br.grid_search(data)
        lam, _, _ = br.global_hypernet(data, key, 2000, 300)
        return val, lam

    val, lam = jax.jit(f, compiler_options=common.FAST_COMPILE)(data, jax.random.key(13))
    best = int(jnp.argmin(val))
    assert 0 < best < len(br.GRID) - 1  # interior: the regulariser matters
    assert float(val[0]) > float(val[best]) + 0.1  # no regularisation overfits
    assert run.in_best_interval(float(lam), best), (float(lam), br.GRID[best])


def test_gd_evidence_peaks_before_training_loss_stops_falling(tmp_path):
    """On the overfitting run (50 diabetes patients, 100 sigmoid units), the evidence estimate
    peaks while the training log-likelihood is still rising, and falls afterwards."""
    from experiments.gd_evidence import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "gd_evidence.png").stat().st_size > 0
    saved = json.loads((tmp_path / "gd_evidence.json").read_text())
    p = saved["peaks"]
    est = np.asarray(saved["curves"]["estimate"])
    for s in range(2):
        assert p["step_estimate_peak"][s] < saved["config"]["steps"] // 2
        assert p["train_final"][s] > p["train_at_estimate_peak"][s] + 0.05
        assert est[s, -1] < p["estimate_max"][s] - 1.0


@pytest.mark.slow  # the whole pipeline with tiny budgets: ~30 s of compilation
def test_hypernetworks_run_smoke(tmp_path):
    from experiments.hypernetworks import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    for name in ("best_response.png", "complexity_pruning.png", "hypernetworks.md"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "hypernetworks.json").read_text())
    assert np.asarray(saved["best_response"]["lam"]).shape == (2, 4)
    acc = np.asarray(saved["complexity"]["accuracy"])
    assert acc.shape == (2, 5, 11) and np.all((0 <= acc) & (acc <= 1))
