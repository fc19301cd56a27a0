"""Timing helpers shared by the benchmarks (not a subcommand: no bench_ prefix)."""

from __future__ import annotations

import pathlib
import resource
import sys
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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB, its own address space only.

    On Linux, ``VmHWM`` of ``/proc/self/status``: ``getrusage(RUSAGE_SELF).ru_maxrss`` keeps
    the high-water mark of the image before ``exec`` -- a benchmark's child process reports at
    least its parent's resident memory at the fork (measured: a child of a 2 GiB parent read
    2,076 MB there and 13.5 MB here). Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on Linux).
    """
    status = pathlib.Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0  # kB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0
