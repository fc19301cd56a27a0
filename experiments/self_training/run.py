"""Self-training (Metz et al. 2020, sec. 6): does a learned optimizer train its own weights
better than Adam does, from the same start and with the same budget?

Two arms of the preset ``self_train_norm`` (PES on the digits MLP family, ``norm_mlp``,
log-training-loss meta-objective), identical for the first ``warmup`` outer steps: Adam at
3e-3 warms up theta; then arm "Adam" continues with the same Adam, arm "self" lets the learned
optimizer update its own theta (``outer.name=self``, told the remaining budget). Both use the
same random streams (the outer optimizer draws none), so they share the warm-up exactly and
spend the same task-steps. Reported per seed: the meta-loss (mean log training loss over the
PES truncations) averaged over the last 20% of outer steps, and the curves.

    .venv/bin/python -m experiments.self_training.run [--seeds 5] [--steps 400] [--warmup 100]
"""

from __future__ import annotations

import json
import pathlib
import tempfile
import time

import numpy as np

from experiments import hypergrad_common as common
from metaopt.spec import Spec
from metaopt.train import presets
from metaopt.train.loop import train

ARMS = ("Adam", "self")


def arm_config(arm: str, seed: int, steps: int, warmup: int, smoke: bool):
    cfg = presets.get("self_train_norm")
    lr = cfg.outer.options["warmup_learning_rate"]
    outer = Spec("adam", {"learning_rate": lr}) if arm == "Adam" else Spec(
        "self", {"warmup_steps": warmup, "warmup_learning_rate": lr,
                 "num_steps": steps - warmup})
    over = [f"run.seed={seed}", f"run.outer_steps={steps}", f"run.log_every={1 if smoke else 5}",
            f"run.checkpoint_every={steps}"]
    if smoke:
        over += ["estimator.num_tasks=2", "schedule.min_length=20", "schedule.max_length=40",
                 "estimator.unroll_length=10"]
    import dataclasses

    return dataclasses.replace(cfg, outer=outer).with_overrides(over)


def curve(run_dir: pathlib.Path) -> tuple[list[int], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r["meta_loss"] for r in rows]


def plot(result: dict, path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, color in zip(ARMS, ("C0", "C3"), strict=True):
        for i, run in enumerate(result["runs"][arm]):
            ax.plot(run["steps"], run["meta_loss"], color=color, alpha=0.5, lw=1,
                    label=arm if i == 0 else None)
    ax.axvline(result["warmup"], color="k", ls="--", lw=0.8, label="end of Adam warm-up")
    ax.set_xlabel("outer step")
    ax.set_ylabel("meta-loss (mean log training loss)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = common.base_parser(__doc__, "experiments/self_training/results")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--warmup", type=int, default=100)
    args = p.parse_args(argv)
    steps, warmup = (12, 4) if args.smoke else (args.steps, args.warmup)
    t0 = time.time()
    runs = {arm: [] for arm in ARMS}
    tail = max(1, steps // 5)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            for arm in ARMS:
                run_dir = pathlib.Path(tmp) / f"{arm}-{seed}"
                train(arm_config(arm, seed, steps, warmup, args.smoke), run_dir, progress=False)
                s, m = curve(run_dir)
                final = float(np.mean([v for k, v in zip(s, m, strict=True) if k > steps - tail]))
                runs[arm].append({"seed": seed, "steps": s, "meta_loss": m, "final": final})
    finals = {arm: [r["final"] for r in runs[arm]] for arm in ARMS}
    diff = np.asarray(finals["self"]) - np.asarray(finals["Adam"])
    rows = [[arm, common.fmt(finals[arm], digits=3)] for arm in ARMS]
    rows.append(["self - Adam (paired)", common.fmt(diff, digits=3)])
    table = common.markdown_table(
        ["outer optimizer after the warm-up", f"final meta-loss (last {tail} steps), "
         f"mean ± 95% CI over {args.seeds} seeds"], rows)
    result = {"steps": steps, "warmup": warmup, "seeds": args.seeds, "finals": finals,
              "paired_difference": diff.tolist(), "runs": runs}
    common.save(args.out, "self_training", result, table, t0)
    plot(result, pathlib.Path(args.out) / "self_training.png")
    return result


if __name__ == "__main__":
    main()
