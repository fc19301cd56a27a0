"""Helpers shared by the hypergradient experiments (greedy_toy, greedy_hypercleaning,
greedy_fewshot): 95% confidence intervals, result files, markdown tables, fast-compile flags."""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import time
from collections.abc import Sequence

import numpy as np
from scipy import stats

# XLA CPU compile options for smoke runs: LLVM optimization off compiles 3-4x faster.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t confidence interval over seeds."""
    x = np.asarray(values, np.float64)
    if x.size < 2:
        return float(x.mean()), float("nan")
    half = stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean()), float(half)


def fmt(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``"mean ± ci"`` of ``scale * values``."""
    m, h = mean_ci(np.asarray(values) * scale)
    return f"{m:.{digits}f} ± {h:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |",
             "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)


def base_parser(doc: str, out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    p.add_argument("--out", default=out, help="results folder (JSON, PNG, table)")
    p.add_argument("--seeds", type=int, default=5, help="independent seeds (>= 2 for a CI)")
    p.add_argument("--smoke", action="store_true",
                   help="a few outer steps with fast compilation (for the test suite)")
    return p


def save(out: str | pathlib.Path, name: str, result: dict, table: str, started: float) -> None:
    """Write ``{name}.json`` (with run info) and ``{name}.md`` (the table) under ``out``."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    import jax  # late: keep this module importable without initializing a backend

    result = {**result, "wall_seconds": round(time.time() - started, 1),
              "device": jax.devices()[0].device_kind, "machine": platform.machine()}
    (out / f"{name}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    (out / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"wrote {out / (name + '.json')} in {result['wall_seconds']} s")
