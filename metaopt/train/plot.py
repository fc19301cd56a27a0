"""``metaopt plot RUN_DIR``: PNG curves of a run's metrics file."""

from __future__ import annotations

import json
import pathlib

from metaopt.io.metrics import read_metrics

PLOTTED = ("meta_loss", "grad_norm", "inner_steps_per_s", "nonfinite_steps", "skipped_total")


def plot_run(run_dir: str | pathlib.Path) -> list[pathlib.Path]:
    """Write ``RUN_DIR/plots/<metric>.png`` for each metric present; return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = pathlib.Path(run_dir)
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        raise ValueError(f"run_dir: {run_dir} has no metrics.jsonl (not a run directory?)")
    rows = read_metrics(path)
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("step"), int):
            from metaopt.spec import SpecError

            raise SpecError(str(path), f"row {i + 1} is not a metrics row (a JSON object with an "
                            f"integer 'step'): {json.dumps(row)[:80]}")
    out = run_dir / "plots"
    out.mkdir(exist_ok=True)
    written = []
    for name in PLOTTED:
        pts = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), int | float)]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(*zip(*pts))
        ax.set(xlabel="outer step", ylabel=name, title=f"{run_dir.name}: {name}")
        if name in ("meta_loss", "grad_norm") and all(v > 0 for _, v in pts):
            ax.set_yscale("log")
        fig.tight_layout()
        fig.savefig(out / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(out / f"{name}.png")
    return written
