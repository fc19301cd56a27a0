"""Smoke versions of the three hypergradient experiments (a few outer steps, fast compiles):
each writes its results JSON, table and PNG, with the structure the READMEs report."""

import json

import pytest


def test_toy_smoke(tmp_path):
    from experiments.greedy_toy import run

    result = run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "toy_cosine.png").stat().st_size > 0
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert saved["horizons"] == result["horizons"] and len(saved["runs"]["5"]) == 2
    for name in saved["estimators"]:
        cos = saved["runs"]["5"][0][name]["cos"]
        assert (cos == 0.0) if name == "FO" else (0.5 < cos <= 1.0 + 1e-6), (name, cos)


def test_hypercleaning_smoke(tmp_path):
    from experiments.greedy_hypercleaning import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "hypercleaning.png").stat().st_size > 0
    saved = json.loads((tmp_path / "hypercleaning.json").read_text())
    assert saved["vjps"] == {"greedy γ=0.9": 10.0}
    for rate in ("0.3", "0.5"):
        for seed in ("0", "1"):
            res = saved["runs"][rate][seed]
            assert 0.3 < res["no tuning"]["test_accuracy"] <= 1.0
            assert 0.0 <= res["greedy γ=0.9"]["auc"] <= 1.0


@pytest.mark.slow  # default suite < 10 min on 2 cores
def test_fewshot_smoke(tmp_path):
    from experiments.greedy_fewshot import run

    run.main(["--smoke", "--seeds", "2", "--out", str(tmp_path)])
    assert (tmp_path / "fewshot.png").stat().st_size > 0
    saved = json.loads((tmp_path / "fewshot.json").read_text())
    res = saved["runs"]["3"]["greedy γ=0.9"]
    assert res["vjps"] == 10.0 and len(res["accuracy"]) == 2
    assert all(0.0 <= a <= 1.0 for a in res["accuracy"] + saved["untrained"]["3"])
    assert "| greedy γ=0.9 | 10 |" in (tmp_path / "fewshot.md").read_text()
