"""Metrics as JSON lines: one object per logged outer step, appended and flushed."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/Inf literal
    return value


class MetricsWriter:
    """Append ``{"step": ..., **metrics}`` rows to ``path``; each row is flushed at once."""

    def __init__(self, path: str | pathlib.Path):
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, step: int, metrics: dict[str, Any]) -> None:
        row = {"step": int(step), **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_metrics(path: str | pathlib.Path) -> list[dict[str, Any]]:
    """Rows of a metrics file; a last line cut off by a crash is skipped."""
    rows = []
    for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_after(path: str | pathlib.Path, step: int) -> None:
    """Drop rows logged after ``step`` (used when resuming from an earlier checkpoint)."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    keep = [r for r in read_metrics(path) if r.get("step", -1) <= step]
    path.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep), encoding="utf-8")
