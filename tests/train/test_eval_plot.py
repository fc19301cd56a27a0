"""``metaopt eval`` (run directory or pretrained name) and ``metaopt plot``."""

import json

from metaopt.cli import main
from metaopt.train.evaluate import ADAM_GRID


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


def test_eval_of_an_unknown_name_exits_2(capsys):
    assert main(["eval", "no_such_run_or_name"]) == 2
    err = capsys.readouterr().err
    assert "mlp_small_digits" in err and len(err.strip().splitlines()) == 1


def test_plot_writes_one_png_per_metric(tmp_path):
    rows = [{"step": s, "meta_loss": 2.0 / s, "grad_norm": 1.0, "task_steps_per_s": 100.0 * s}
            for s in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["plot", str(tmp_path)]) == 0
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["grad_norm.png", "meta_loss.png", "task_steps_per_s.png"]
    for n in names:
        assert (tmp_path / "plots" / n).read_bytes()[:4] == b"\x89PNG"


def test_adam_grid_in_one_vmapped_unroll_equals_separate_runs():
    import numpy as np
    import optax

    from metaopt.train.evaluate import adam_grid_curves, curves, make_eval_task

    task = make_eval_task("quadratic")
    grid = adam_grid_curves(task, (1e-3, 3e-2), steps=25, seeds=2)
    for lr in (1e-3, 3e-2):
        ref = curves(task, optax.adam(lr), steps=25, seeds=2)
        np.testing.assert_allclose(grid[lr]["train"], ref["train"], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(grid[lr]["valid"], ref["valid"], rtol=1e-5, atol=1e-6)
