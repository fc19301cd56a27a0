"""Attention with momentum (Dai et al. 2022, Sec. 5) vs plain attention, in-context.

The linear-attention transformer of experiments/icl_vs_finetune, trained on the same
in-context linear classification task (K = 16 demonstrations), once with plain attention and
once with MoAttn (every layer adds ``sum_{i<j} lambda^{j-i} v_i``, :mod:`metaopt.linear_
transformer`). Same seed -> same initial weights (MoAttn has no extra parameters) and same
training episodes, so the comparison is paired. Reported: query MSE and accuracy on fresh
episodes with K = 8, 16, 32 demonstrations (Dai et al. also test at other lengths), mean ±
95% CI over seeds, and the paired difference MoAttn - plain.

    .venv/bin/python -m experiments.momentum_attention.run [--seeds 5] [--steps 400] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import numpy as np

from experiments import hypergrad_common as common
from experiments import icl_common as icl

LAMBDA = 0.9
EVAL_DEMOS = (8, 16, 32)
VARIANTS = {"Transformer": 0.0, f"Transformer_MoAttn (λ={LAMBDA})": LAMBDA}


def run_size(size, seeds: int, steps: int, n_test: int, opts) -> dict:
    keys = icl.seed_keys(seeds)
    out = {}
    for name, lam in VARIANTS.items():
        model = icl.make_model(size, lam)

        def one(key, model=model):
            params, curve = icl.train(model, key, steps)
            k_test = jax.random.fold_in(key, 2)
            ev = {str(k): icl.evaluate(model, params, k_test, n_test, k) for k in EVAL_DEMOS}
            return ev, curve

        ev, curves = jax.jit(jax.vmap(one), compiler_options=opts)(keys)
        out[name] = {"eval": jax.tree.map(lambda a: np.asarray(a).tolist(), ev),
                     "loss_curve": np.asarray(curves.mean(0)).tolist()}
    return out


def table(result: dict) -> str:
    plain, mo = list(VARIANTS)
    rows = []
    for size in result["sizes"]:
        runs = result["runs"][size]
        for name in (plain, mo):
            ev = runs[name]["eval"]
            rows.append([size, name,
                         *[common.fmt(ev[str(k)]["mse"], digits=3) for k in EVAL_DEMOS],
                         *[common.fmt(ev[str(k)]["accuracy"], 100) for k in EVAL_DEMOS]])
        diff = {k: {m: np.asarray(runs[mo]["eval"][str(k)][m]) -
                    np.asarray(runs[plain]["eval"][str(k)][m]) for m in ("mse", "accuracy")}
                for k in EVAL_DEMOS}
        rows.append([size, "**MoAttn − plain (paired)**",
                     *[common.fmt(diff[k]["mse"], digits=3) for k in EVAL_DEMOS],
                     *[common.fmt(diff[k]["accuracy"], 100) for k in EVAL_DEMOS]])
    header = ["Model", "attention", *[f"MSE K={k}" for k in EVAL_DEMOS],
              *[f"acc % K={k}" for k in EVAL_DEMOS]]
    return common.markdown_table(header, rows)


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["sizes"]), figsize=(5.5 * len(result["sizes"]), 3.8),
                             squeeze=False)
    for ax, size in zip(axes[0], result["sizes"]):
        for name in VARIANTS:
            stats = [common.mean_ci(result["runs"][size][name]["eval"][str(k)]["mse"])
                     for k in EVAL_DEMOS]
            ax.errorbar(EVAL_DEMOS, [m for m, _ in stats], [np.nan_to_num(h) for _, h in stats],
                        marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("demonstrations K at test (trained at 16)")
        ax.set_ylabel("query MSE (mean ± 95% CI)")
        ax.set_title(size)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args = icl.parse_args(__doc__, "experiments/momentum_attention/results", argv)
    sizes = list(icl.SIZES)[:1]  # the small model (two sizes would not fit the time budget)
    steps = min(args.steps, 60) if args.smoke else args.steps
    n_test = 64 if args.smoke else 2048
    opts = common.FAST_COMPILE if args.smoke else None
    started = time.time()
    runs = {}
    for size in sizes:
        t0 = time.time()
        runs[size] = run_size(icl.SIZES[size], args.seeds, steps, n_test, opts)
        print(f"{size}: {time.time() - t0:.1f} s", flush=True)
    result = {"sizes": sizes, "size_spec": {n: icl.SIZES[n] for n in sizes}, "seeds": args.seeds,
              "steps": steps, "lambda": LAMBDA, "eval_demos": list(EVAL_DEMOS),
              "train_demos": icl.DEMOS, "n_test": n_test, "variants": list(VARIANTS),
              "runs": runs}
    common.save(args.out, "momentum_attention", result, table(result), started)
    plot(result, f"{args.out}/momentum_attention.png")
    return result


if __name__ == "__main__":
    main()
