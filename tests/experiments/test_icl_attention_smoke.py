"""Smoke versions of experiments/icl_vs_finetune and experiments/momentum_attention (a few
dozen meta-training steps, fast compiles): the files and tables they report, and the
direction of the result (a meta-trained linear-attention transformer learns in context)."""

import json

import pytest


def test_icl_vs_finetune_smoke(tmp_path):
    from experiments.icl_vs_finetune import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "icl_vs_finetune.png").stat().st_size > 0
    saved = json.loads((tmp_path / "icl_vs_finetune.json").read_text())
    (size,) = saved["sizes"]
    res = saved["runs"][size]
    for seed in range(2):
        # zero-shot is chance (labels are a fresh random sign function per episode); the
        # meta-trained model predicts from the demonstrations, the untrained one cannot
        assert abs(res["acc_zsl"][seed] - 50) < 15
        assert res["acc_icl"][seed] > res["acc_zsl"][seed] + 5
        assert res["acc_icl"][seed] > res["acc_icl_untrained"][seed] + 5
        assert 0 <= res["rec2ftp"][seed] <= 100 and res["rec2ftp_count"][seed] > 0
        # layer 1 sees identical query tokens under ZSL and ICL: its maps agree exactly
        assert res["zsl_simam_per_layer"][seed][0] == pytest.approx(1.0, abs=1e-5)
    assert "| Model | Task | Rec2FTP | SimAOU | Random SimAOU | SimAM | ZSL SimAM |" in (
        tmp_path / "icl_vs_finetune.md").read_text()


@pytest.mark.slow
def test_momentum_attention_smoke(tmp_path):
    from experiments.momentum_attention import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "momentum_attention.png").stat().st_size > 0
    saved = json.loads((tmp_path / "momentum_attention.json").read_text())
    (size,) = saved["sizes"]
    for name in saved["variants"]:
        acc = saved["runs"][size][name]["eval"]["16"]["accuracy"]
        assert len(acc) == 2 and all(0.55 < a <= 1.0 for a in acc), (name, acc)
    assert "MoAttn − plain (paired)" in (tmp_path / "momentum_attention.md").read_text()
