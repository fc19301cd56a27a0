"""Toy: cosine similarity of each hypergradient estimator with the exact one, vs the horizon T.

The Shaban et al. toy of seed 001 (:func:`metaopt.hypergrad.shaban_toy`): w in R^2,
L_train = 1/2 (w - alpha)^T diag(1, 1/2) (w - alpha), L_val = 1/2 ||w - c||^2, T steps of
gradient descent with lr 0.1 from w_0. Per seed, ``--instances`` random problems
(c, w_0, alpha ~ N(0, I)); the exact hypergradient is RMD. Reported per estimator and T: the
mean cosine over the instances (then mean ± 95% CI over seeds), and the fraction of instances
where <exact, estimate> > 0 (the descent property of the seed's theorem for gamma = 1 - lr).

    .venv/bin/python -m experiments.greedy_toy.run [--seeds 10] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import hypergrad_common as common
from metaopt import hypergrad as hg

HORIZONS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100)
LR = 0.1


def estimators(bl: hg.Bilevel) -> dict:
    return {
        "FO": hg.fo(bl),
        "T1-T2": hg.t1t2(bl),
        "IFT (K=10)": hg.ift(bl, num_terms=10),
        "greedy γ=0.5": hg.greedy(bl, gamma=0.5),
        "greedy γ=0.9 (=1-lr)": hg.greedy(bl, gamma=1 - LR),
        "greedy γ=0.99": hg.greedy(bl, gamma=0.99),
    }


def evaluate(horizon: int, seeds: int, instances: int, compiler_options=None) -> list[dict]:
    """Per seed: mean cosine and positive fraction of each estimator over random instances."""
    bl = hg.shaban_toy(horizon, lr=LR)
    ests, exact = estimators(bl), hg.rmd(bl)

    def one(key, alpha):
        d = exact.estimate(key, alpha, ())[0]
        out = {}
        for name, est in ests.items():
            g = est.estimate(key, alpha, ())[0]
            dot = jnp.vdot(g, d)
            norms = jnp.linalg.norm(g) * jnp.linalg.norm(d)
            out[name] = (jnp.where(norms > 0, dot / jnp.maximum(norms, 1e-30), 0.0), dot > 0)
        return out

    def per_seed(seed_key):
        k_keys, k_alpha = jax.random.split(seed_key)
        alphas = jax.random.normal(k_alpha, (instances, 2))
        res = jax.vmap(one)(jax.random.split(k_keys, instances), alphas)
        return {name: (jnp.mean(c), jnp.mean(p)) for name, (c, p) in res.items()}

    seed_keys = jnp.stack([jax.random.key(s) for s in range(seeds)])
    res = jax.jit(jax.vmap(per_seed), compiler_options=compiler_options)(seed_keys)
    return [{name: {"cos": float(c[s]), "positive": float(p[s])} for name, (c, p) in res.items()}
            for s in range(seeds)]


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    hs = result["horizons"]
    for name in result["estimators"]:
        per = np.array([[result["runs"][str(t)][s][name]["cos"] for s in range(result["seeds"])]
                        for t in hs])
        stats = [common.mean_ci(row) for row in per]
        m = np.array([s[0] for s in stats])
        h = np.nan_to_num(np.array([s[1] for s in stats]))
        ax.plot(hs, m, marker="o", ms=3, label=name)
        ax.fill_between(hs, m - h, m + h, alpha=0.2)
    ax.set_xscale("log")
    ax.set_xlabel("horizon T (inner GD steps)")
    ax.set_ylabel("cosine with the exact hypergradient")
    ax.set_title("Shaban toy, H = diag(1, 1/2), lr 0.1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> dict:
    args = common.base_parser(__doc__, "experiments/greedy_toy/results").parse_args(argv)
    args_instances = 20 if args.smoke else 200
    horizons = (5,) if args.smoke else HORIZONS
    opts = common.FAST_COMPILE if args.smoke else None
    started = time.time()
    runs = {str(t): evaluate(t, args.seeds, args_instances, opts) for t in horizons}
    names = list(estimators(hg.shaban_toy(1, lr=LR)))
    result = {"horizons": list(horizons), "seeds": args.seeds, "instances": args_instances,
              "lr": LR, "estimators": names, "runs": runs}
    shown = [t for t in (1, 5, 20, 100) if t in horizons] or list(horizons)
    theorem = [t for t in (5, 20) if t in horizons]
    rows = []
    for name in names:
        cells = [common.fmt([r[name]["cos"] for r in runs[str(t)]], digits=3) for t in shown]
        pos = [common.fmt([r[name]["positive"] for r in runs[str(t)]], 100, 1) for t in theorem]
        rows.append([name, *cells, *pos])
    table = common.markdown_table(
        ["estimator", *[f"cos, T={t}" for t in shown],
         *[f"% <d, est> > 0, T={t}" for t in theorem]], rows)
    common.save(args.out, "toy", result, table, started)
    plot(result, f"{args.out}/toy_cosine.png")
    return result


if __name__ == "__main__":
    main()
