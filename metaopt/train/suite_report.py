"""``eval.md``, ``eval.json`` and ``eval_curves.png`` of a suite evaluation
(:func:`metaopt.train.suite_eval.evaluate_suite`)."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np

from metaopt.train import suite_eval

CURVE_POINTS = 500  # curves in eval.json are subsampled to at most this many points
NAMES = {"learned": "{source}", "adam_1e-3": "Adam 1e-3", "adam_tuned": "Adam tuned",
         "sgdm_tuned": "SGD+mom tuned", "baseline": "{baseline}"}


def _fmt(x: float) -> str:
    if not math.isfinite(x):
        return "nan"
    return f"{x:.3g}" if abs(x) < 1e4 else f"{x:.2e}"


def _metric(x: float, kind: str) -> str:
    return f"{100 * x:.1f}%" if kind == "test accuracy" and math.isfinite(x) else _fmt(x)


def table(results: dict, source: str, baseline: str | None) -> list[str]:
    """The markdown table: one row per task, one column per optimizer."""
    cols = [c for c in suite_eval.COLUMNS
            if any(c in r["optimizers"] for r in results.values())]
    names = [NAMES[c].format(source=source, baseline=baseline) for c in cols]
    lines = ["| task | steps | metric | " + " | ".join(names) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in cols) + " |"]
    for label, r in results.items():
        cells = []
        for c in cols:
            o = r["optimizers"].get(c)
            if o is None:
                cells.append("")
                continue
            s = f"{_fmt(o['final_train_loss'])} / {_metric(o['test_metric'], r['metric'])}"
            if "lr" in o:
                s += f" (lr {o['lr']:.2g})"
            if o["diverged"]:
                s += f" **div {o['diverged']}**"
            if o.get("late_blowup"):
                s += " **blow-up**"
            cells.append(s)
        lines.append(f"| {label} | {r['steps']} | {r['metric']} | " + " | ".join(cells) + " |")
    return lines


def bar_lines(bar: dict, name: str) -> list[str]:
    return [f"* **{name}**: beats Adam 1e-3 on {bar['beats_adam_1e-3']:.0%} of "
            f"{bar['tasks']} tasks; within {suite_eval.WITHIN_TUNED}x of tuned Adam's final "
            f"training loss on {bar['within_1.2x_tuned_adam']:.0%}; tasks with a diverged "
            f"seed: {bar['tasks_with_divergence']}; tasks with a late blow-up: "
            f"{bar['tasks_with_late_blowup']}"]


def write(results: dict, out_dir: pathlib.Path, *, source: str, baseline: str | None,
          suite: str, seeds: int, wall_s: float, tune_seeds: int = suite_eval.TUNE_SEEDS,
          max_steps: int | None = None, reused_from: str | None = None) -> str:
    """Write the three files into ``out_dir``; return the markdown. ``tune_seeds`` and
    ``max_steps`` are recorded so that a later evaluation can reuse the baseline columns
    (``reused_from``: the report they were copied from, if any)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = {c: suite_eval.summarize(results, c) for c in ("learned", "baseline")
            if any(c in r["optimizers"] for r in results.values())}
    md = [f"# `{source}` on the `{suite}` suite", "",
          f"{len(results)} tasks, {seeds} seeds each (the same inits and batches for every "
          f"optimizer); wall time {wall_s:.0f} s. Cell: final training loss (mean of the last "
          f"10% of steps, mean over seeds) / test metric of the final parameters (accuracy "
          f"for classification, else loss; {suite_eval.EVAL_BATCHES} test batches). Tuned: "
          f"best of {len(suite_eval.GRID)} log-spaced learning rates 1e-5..1 by final training "
          f"loss on separate tuning instances, then run on the evaluation seeds. "
          f"**div k**: k seeds diverged (a non-finite loss, or a final loss above "
          f"{suite_eval.DIVERGE_FACTOR:g}x the initial loss). **blow-up**: the mean-over-seeds "
          f"final loss is above {suite_eval.BLOWUP_FACTOR:g}x the lowest loss it reached "
          f"(both averaged over windows of 10% of the steps) and above it by more than the "
          f"float32 resolution of the loss ({suite_eval.RESOLUTION:.1e} x the initial loss: a "
          f"loss at zero flickers by a few ulps).", "",
          *([] if reused_from is None else [
              f"The Adam, SGD and {baseline or 'baseline'} columns are copied from "
              f"`{reused_from}` (same suite, seeds and tuning; their runs are deterministic), "
              f"with its subsampled curves.", ""]),
          *table(results, source, baseline), "", "## Bar", ""]
    for c, bar in bars.items():
        md += bar_lines(bar, source if c == "learned" else str(baseline))
    text = "\n".join(md) + "\n"
    (out_dir / "eval.md").write_text(text)
    data = {"source": source, "baseline": baseline, "suite": suite, "seeds": seeds,
            "tune_seeds": tune_seeds, "max_steps": max_steps, "reused_from": reused_from,
            "wall_s": wall_s, "bar": bars, "tasks": _jsonable(results)}
    (out_dir / "eval.json").write_text(json.dumps(data, indent=1))
    plot(results, out_dir / "eval_curves.png", source, baseline)
    return text


def _jsonable(results: dict) -> dict:
    out = {}
    for label, r in results.items():
        opts = {}
        for c, o in r["optimizers"].items():
            curve = np.asarray(o["train_curve"])
            stride = max(1, math.ceil(len(curve) / CURVE_POINTS))
            opts[c] = {**{k: v for k, v in o.items() if k != "train_curve"},
                       "curve_stride": stride * o.get("curve_stride", 1),  # reused: strided
                       "train_curve": [float(x) for x in curve[::stride]]}
        out[label] = {**r, "optimizers": opts}
    return out


def plot(results: dict, file: pathlib.Path, source: str, baseline: str | None) -> None:
    """One PNG: a grid of subplots (one per task) of mean-over-seeds training loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    ncol = min(4, n)
    nrow = math.ceil(n / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3 * nrow), squeeze=False)
    for ax, (label, r) in zip(axes.flat, results.items(), strict=False):
        for c, o in r["optimizers"].items():
            curve = np.asarray(o["train_curve"], np.float64)
            name = NAMES[c].format(source=source, baseline=baseline)
            if "lr" in o:
                name += f" ({o['lr']:.2g})"
            steps = np.arange(len(curve)) * o.get("curve_stride", 1)  # reused: subsampled
            ax.plot(steps, np.where(curve > 0, curve, np.nan), label=name, lw=1)
        ax.set(title=label, yscale="log", xlabel="step")
        ax.title.set_fontsize(9)
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(file, dpi=80)
    plt.close(fig)
