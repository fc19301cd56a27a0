"""The LSTM-optimizer experiment (Andrychowicz et al. 2016): the direction of its result on a
tiny budget, and (slow) the whole pipeline's files."""

import json

import jax
import numpy as np
import pytest

from experiments import hypergrad_common as common
from experiments.lstm_optimizer import run
from metaopt.tasks import least_squares_family
from metaopt.train import baselines as bl


def test_meta_trained_lstm_beats_its_untrained_start_on_held_out_quadratics():
    family, lo = least_squares_family(), run.lstm(0.1)
    theta0, thetas, meta_loss = run.meta_train(
        family, lo, meta_seeds=1, outer_steps=20, num_tasks=4, outer_lr=3e-3, clip=10.0,
        chunk=20, compiler_options=common.FAST_COMPILE)
    assert meta_loss.shape == (1, 20) and np.all(np.isfinite(meta_loss))
    both = jax.tree.map(lambda a, b: np.concatenate([a, b]), theta0, thetas)
    c = run.eval_lstm(family, lo, both, jax.random.split(jax.random.key(123), 3), 60, 4,
                      common.FAST_COMPILE)
    final = bl.final_loss(c["loss"], c["diverged"])  # [2 optimizers, 3 held-out seeds]
    assert not c["diverged"].any()
    # the untrained LSTM diverges (its random output layer has a non-zero mean: the loss grows
    # from ||y||^2 ~ 10); 20 outer steps of TBPTT already make it descend, cutting the final
    # loss on every held-out seed by more than half
    assert np.all(final[1] < 0.5 * final[0]), final


@pytest.mark.slow  # the whole pipeline on a tiny budget: ~12 compilations, ~6 CPU-minutes
def test_lstm_optimizer_smoke_writes_its_files(tmp_path):
    result = run.main(["--smoke", "--seeds", "2", "--quad-meta-seeds", "2",
                       "--out", str(tmp_path)])
    assert (tmp_path / "lstm_optimizer.png").stat().st_size > 0
    saved = json.loads((tmp_path / "lstm_optimizer.json").read_text())
    assert set(saved["results"]) == {"quadratic", *run.MLP_SETTINGS}
    for res in result["results"].values():
        assert {"SGD", "momentum", "NAG", "RMSprop", "Adam", run.LSTM, run.UNTRAINED} <= set(res)
        assert res["Adam"]["lr"] in saved["lr_grid"]
    assert len(result["results"]["quadratic"][run.LSTM]["final_per_meta_seed"]) == 2
    assert "LSTM over 2 meta-training seeds" in (tmp_path / "lstm_optimizer.md").read_text()
