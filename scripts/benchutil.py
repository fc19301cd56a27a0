"""Timing helpers shared by the benchmarks (not a subcommand: no bench_ prefix)."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax


def best_rate(fn: Callable[[], object], units: float, repeats: int = 5, inner: int = 3) -> float:
    """Units per second of ``fn`` (already compiled): the best of ``repeats`` timings."""
    jax.block_until_ready(fn())
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            jax.block_until_ready(fn())
        best = max(best, inner * units / (time.perf_counter() - t0))
    return best


def print_table(rows: list[tuple], header: tuple) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
