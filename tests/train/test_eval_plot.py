"""``metaopt eval`` (run directory, saved file or pretrained name) and ``metaopt plot``; a saved
optimizer is evaluated with the validation-loss input exactly when it was trained with it."""

import json

import jax
import numpy as np
import optax
import pytest

import metaopt
from metaopt.cli import main
from metaopt.spec import Spec
from metaopt.train import evaluate
from metaopt.train.evaluate import ADAM_GRID, adam_grid_curves, curves


@pytest.mark.slow  # default suite < 10 min on 2 cores; test_cli covers metaopt eval
def test_eval_of_a_pretrained_name_writes_table_json_and_png(tmp_path, capsys):
    out = tmp_path / "ev"
    code = main(["eval", "mlp_small_digits", "--tasks", "quadratic", "--steps", "30",
                 "--seeds", "2", "--out", str(out)])
    assert code == 0
    res = json.loads((out / "eval.json").read_text())["quadratic"]
    labels = set(res)
    assert {"mlp_small (meta-trained)", "mlp_small (untrained start)", "sgd(lr=0.1)",
            "adam(lr=1e-3)"} <= labels
    best = [k for k in labels if k.startswith("adam(best")]
    assert len(best) == 1
    # 1e-3 is on the grid, so the tuned Adam is at least as good as Adam at 1e-3
    assert any(abs(lr - 1e-3) < 1e-12 for lr in ADAM_GRID)
    assert res[best[0]]["final_train_loss"] <= res["adam(lr=1e-3)"]["final_train_loss"]
    assert all(len(r["train_curve"]) == 30 for r in res.values())
    assert (out / "eval_quadratic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| quadratic | mlp_small (meta-trained) |" in (out / "eval.md").read_text()


def test_plot_writes_one_png_per_metric(tmp_path):
    rows = [{"step": s, "meta_loss": 2.0 / s, "grad_norm": 1.0, "inner_steps_per_s": 100.0 * s}
            for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plot", str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["grad_norm.png", "inner_steps_per_s.png", "meta_loss.png"]
    for n in names:
        assert (tmp_path / "plots" / n).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_adam_grid_in_one_vmapped_unroll_equals_separate_runs():
    task = metaopt.tasks.make("quadratic")
    grid = adam_grid_curves(task, (1e-3, 3e-2), steps=25, seeds=2)
    for lr in (1e-3, 3e-2):
        ref = curves(task, optax.adam(lr), steps=25, seeds=2)
        np.testing.assert_allclose(grid[lr]["train"], ref["train"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid[lr]["valid"], ref["valid"], rtol=1e-5, atol=1e-6)


def _reads_valid_loss():
    """SGD whose step grows with the ``valid_loss`` extra arg when it is given."""

    def update(grads, state, params=None, **extra):
        scale = 0.05 * (1.0 + extra["valid_loss"]) if "valid_loss" in extra else 0.05
        return jax.tree.map(lambda g: -scale * g, grads), state

    return optax.GradientTransformationExtraArgs(lambda p: optax.EmptyState(), update)


def _shifted_validation(family):
    """``family`` whose validation objective is its loss + 3 (training is unchanged)."""
    def task(cfg):
        t = family.task(cfg)
        return t._replace(valid_loss=lambda p, b: t.loss(p, b) + 3.0)

    return family._replace(task=task)


def test_validation_losses_reach_the_optimizer_only_when_fed():
    """Curves without ``feed_valid_loss`` do not depend on the validation objective; with it
    they do (the optimizer receives it)."""
    family = metaopt.tasks.make("quadratic")
    shifted = _shifted_validation(family)
    tx = _reads_valid_loss()
    a, b = (curves(t, tx, steps=15, seeds=2)["train"] for t in (family, shifted))
    np.testing.assert_array_equal(a, b)
    fed = curves(shifted, tx, steps=15, seeds=2, feed_valid_loss=True)["train"]
    assert not np.allclose(fed, b)  # the same task, now with the validation loss as input


def test_eval_feeds_the_validation_loss_as_the_optimizer_was_trained(tmp_path, monkeypatch):
    """Item 4: ``hierarchical`` saved with feed_valid_loss=False is evaluated without
    validation-loss inputs, one saved with True receives them (its untrained start too); the
    baselines never."""
    h = metaopt.lopt.make("hierarchical")
    theta = h.init(jax.random.key(0))
    seen = {}

    def spy(task, optimizer, steps, seeds, seed=1234, *, feed_valid_loss=False):
        seen[len(seen)] = feed_valid_loss
        return {"train": np.ones((seeds, steps)), "valid": np.ones((seeds, steps))}

    monkeypatch.setattr(evaluate, "curves", spy)
    monkeypatch.setattr(evaluate, "adam_grid_curves", lambda task, lrs, steps, seeds: {
        lr: {"train": np.ones((seeds, steps)), "valid": np.ones((seeds, steps))} for lr in lrs})
    for feed in (False, True):
        metaopt.save_optimizer(tmp_path / str(feed), Spec("hierarchical"), theta, num_steps=50,
                               feed_valid_loss=feed, provenance={"seed": 0, "streams": 2})
        cands = evaluate.saved_candidates(tmp_path / str(feed))
        assert [c.feed_valid_loss for c in cands.values()] == [feed, feed]
        seen.clear()
        assert main(["eval", str(tmp_path / str(feed)), "--tasks", "quadratic", "--steps", "5",
                     "--seeds", "1"]) == 0
        assert list(seen.values()) == [feed, feed, False, False]  # lopt x2, sgd, adam
