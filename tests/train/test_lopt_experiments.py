"""Smoke versions of the learned-optimizer experiments (implicit regularization, self-training):
each writes its JSON, table and PNG, and the properties its README relies on hold."""

import json

import numpy as np
import pytest


@pytest.mark.slow  # ~20 s of compiling
def test_implicit_regularization_smoke(tmp_path):
    from experiments.implicit_regularization import run

    result = run.main(["--smoke", "--starts", "3", "--optimizer", "mlp_small_digits",
                       "--out", str(tmp_path)])
    assert (tmp_path / "implicit_regularization.png").stat().st_size > 0
    saved = json.loads((tmp_path / "implicit_regularization.json").read_text())
    assert set(saved["runs"]) == {"Adam 1e-2", "Adam 1e-1", "GD 0.5", "mlp_small_digits"}
    # GD and Adam conserve x + y (their update is (x - y)(1, -1) up to per-coordinate
    # statistics that are equal for both coordinates): they end on the projection
    for name in ("Adam 1e-1", "GD 0.5"):
        np.testing.assert_allclose(result["runs"][name]["sum_drift"], 0.0, atol=1e-4)
    np.testing.assert_allclose(result["runs"]["GD 0.5"]["final_norm"],
                               result["projection_norm"], rtol=1e-4)


@pytest.mark.slow  # two short PES runs: ~2 min of compiling on 2 cores
def test_self_training_smoke(tmp_path):
    from experiments.self_training import run

    result = run.main(["--smoke", "--seeds", "1", "--out", str(tmp_path)])
    assert (tmp_path / "self_training.png").stat().st_size > 0
    adam, self_ = result["runs"]["Adam"][0], result["runs"]["self"][0]
    warm = [i for i, s in enumerate(adam["steps"]) if s <= result["warmup"]]
    # the two arms share the Adam warm-up exactly (same random streams, same updates) ...
    assert warm and [adam["meta_loss"][i] for i in warm] == [self_["meta_loss"][i] for i in warm]
    # ... and differ after it
    assert adam["meta_loss"][-1] != self_["meta_loss"][-1]
