"""Hypernetworks on digits: (a) tuning an L2 strength through a best-response hypernetwork
(Lorraine & Duvenaud 2018) vs grid search and the greedy hypergradient; (b) one hypernetwork
for the whole accuracy-vs-pruning curve (Grebenkova, Bakhteev & Strijov 2023).

Setups: :mod:`experiments.hypernetworks.best_response` and
:mod:`experiments.hypernetworks.complexity`. Seeds vary the 50-image training subset of (a)
and every initialisation and sample.

    .venv/bin/python -m experiments.hypernetworks.run [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import hypergrad_common as common
from experiments.hypernetworks import best_response as br
from experiments.hypernetworks import complexity as cx
from metaopt import tasks

METHODS = ("grid search", "global hypernet", "local hypernet", f"greedy γ={br.GREEDY_GAMMA}")
FULL = {"hyper_steps": br.HYPER_STEPS, "tune_steps": br.TUNE_STEPS, "rounds": br.ROUNDS,
        "greedy_steps": br.GREEDY_STEPS, "cc_steps": cx.STEPS}
SMOKE = {"hyper_steps": 2000, "tune_steps": 300, "rounds": 20, "greedy_steps": 20,
         "cc_steps": 60}


def digits_flat():
    d = tasks.load_digits()
    return {s: (jnp.asarray(d.splits[s][0].reshape(len(d.splits[s][1]), -1)),
                jnp.asarray(d.splits[s][1])) for s in ("train", "valid", "test")}


def subset(full, seed):
    """The seed's 50-image training subset (and the full valid / test splits)."""
    x, y = full["train"]
    idx = np.random.default_rng(seed).choice(y.shape[0], br.N_TRAIN, replace=False)
    return {**full, "train": (x[idx], y[idx])}


def best_response_seed(data, key, budget):
    """Every method's tuned ``lam`` and its retrained validation / test losses."""
    k_global, k_local, k_greedy = jax.random.split(key, 3)
    val, test = br.grid_search(data)
    best = jnp.argmin(val)
    lam_g, w_g, fit_g = br.global_hypernet(data, k_global, budget["hyper_steps"],
                                           budget["tune_steps"])
    lam_l, w_l, path_l = br.local_hypernet(data, k_local, budget["rounds"])
    lam_gr, vjps = br.greedy(data, k_greedy, budget["greedy_steps"])
    lams = jnp.stack([jnp.asarray(br.GRID)[best], lam_g, lam_l, lam_gr])
    params = jax.vmap(lambda lam: br.retrain(data, lam))(lams)
    ce = jax.vmap(lambda p, s: br.cross_entropy(p, *data[s]), (0, None))
    acc = jax.vmap(lambda p: jnp.mean(jnp.argmax(data["test"][0] @ p["w"] + p["b"][None], -1)
                                      == data["test"][1]))
    return {"lam": lams, "val": ce(params, "valid"), "test": ce(params, "test"),
            "test_acc": acc(params), "grid_val": val, "grid_test": test, "grid_best": best,
            "hyper_test": jnp.stack([br.cross_entropy(w, *data["test"]) for w in (w_g, w_l)]),
            "global_fit_loss": fit_g, "local_path": path_l, "greedy_vjps": vjps}


def main(argv=None) -> dict:
    args = common.base_parser(__doc__, "experiments/hypernetworks/results").parse_args(argv)
    budget = SMOKE if args.smoke else FULL
    opts = common.FAST_COMPILE if args.smoke else None
    started = time.time()
    full = digits_flat()
    datas = [subset(full, s) for s in range(args.seeds)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *datas)
    keys = jnp.stack([jax.random.key(10 + s) for s in range(args.seeds)])
    fn = jax.jit(jax.vmap(functools.partial(best_response_seed, budget=budget)),
                 compiler_options=opts)
    br_out = {k: np.asarray(v).tolist() for k, v in fn(stacked, keys).items()}
    print(f"(a) best response: {time.time() - started:.1f} s", flush=True)
    t0 = time.time()
    cc_fn = jax.jit(jax.vmap(lambda k: cx.run(full, k, budget["cc_steps"])),
                    compiler_options=opts)
    cc_out = {k: np.asarray(v).tolist() for k, v in cc_fn(
        jnp.stack([jax.random.key(20 + s) for s in range(args.seeds)])).items()}
    print(f"(b) complexity control: {time.time() - t0:.1f} s", flush=True)
    result = {"seeds": args.seeds, "smoke": args.smoke, "budget": budget,
              "methods": list(METHODS), "grid": list(br.GRID),
              "config": {"n_train": br.N_TRAIN, "K": br.K, "inner_lr": br.INNER_LR,
                         "lam0": br.LAM0, "prior": [br.PRIOR_MEAN, br.PRIOR_STD],
                         "local_std": br.LOCAL_STD, "greedy_T": br.GREEDY_T,
                         "cc_lams": list(cx.LAMS), "cc_fractions": list(cx.FRACTIONS),
                         "cc_threshold": cx.THRESHOLD},
              "best_response": br_out, "complexity": cc_out}
    table = _table_br(result) + "\n\n" + _table_cc(result)
    common.save(args.out, "hypernetworks", result, table, started)
    _plot(result, args.out)
    return result


def in_best_interval(lam, grid_best):
    """Whether ``lam`` lies between the grid points next to the best one."""
    g = np.asarray(br.GRID)
    lo, hi = g[max(grid_best - 1, 0)], g[min(grid_best + 1, len(g) - 1)]
    return bool(lo - 1e-6 <= lam <= hi + 1e-6)


def _table_br(result):
    r, f = result["best_response"], common.fmt
    lam, best = np.asarray(r["lam"]), np.asarray(r["grid_best"])
    hyper = np.asarray(r["hyper_test"])
    rows = []
    for i, name in enumerate(METHODS):
        inside = sum(in_best_interval(lam[s, i], best[s]) for s in range(len(best)))
        test = np.asarray(r["test"])
        rows.append([name, f(lam[:, i], 1, 2), f"{inside}/{len(best)}",
                     f(np.asarray(r["val"])[:, i], 1, 3), f(test[:, i], 1, 3),
                     f(test[:, i] - test[:, 0], 1, 3) if i else "-",
                     f(np.asarray(r["test_acc"])[:, i], 100, 1),
                     f(hyper[:, i - 1], 1, 3) if name.endswith("hypernet") else "-"])
    return common.markdown_table(
        ["method", "tuned log λ", "in grid's best interval", "valid CE (retrained)",
         "test CE (retrained)", "Δ test CE vs grid (paired)", "test acc %",
         "test CE of w_φ(λ)"], rows)


def _table_cc(result):
    c, cfg = result["complexity"], result["config"]
    acc = np.asarray(c["accuracy"])  # [seeds, lams, fractions]
    pruned = np.asarray(c["pruned_at_threshold"])
    fr = cfg["cc_fractions"]
    show = [j for j, x in enumerate(fr) if x in (0.0, 0.5, 0.8, 0.9, 0.95)]
    rows = []
    for i, lam in enumerate(cfg["cc_lams"]):
        keep = acc[:, i, :] >= acc[:, i, :1] - 0.02  # within 2 points of unpruned
        prunable = np.array([max(fr[j] for j in range(len(fr)) if keep[s, j])
                             for s in range(acc.shape[0])])
        rows.append([lam, common.fmt(pruned[:, i], 100, 1), common.fmt(prunable, 100, 0)]
                    + [common.fmt(acc[:, i, j], 100, 1) for j in show])
    return common.markdown_table(
        ["λ", f"% params with |μ| < {cfg['cc_threshold']}", "% prunable (≤ 2 pt acc loss)"]
        + [f"test acc %, {100 * fr[j]:.0f}% pruned" for j in show], rows)


def _plot(result, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r = result["best_response"]
    fig, ax = plt.subplots(figsize=(6, 4))
    grid, val = np.asarray(result["grid"]), np.asarray(r["grid_val"])
    ax.plot(grid, val.mean(0), "k.-", label="grid: valid CE (retrained)")
    lam = np.asarray(r["lam"])
    for i, name in enumerate(METHODS):
        ax.axvline(lam[:, i].mean(), color=f"C{i}", ls="--", label=f"{name}: mean tuned λ")
    ax.set_xlabel("log λ (L2 strength exp(λ))")
    ax.set_ylabel("validation cross-entropy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{out}/best_response.png", dpi=120)

    c, cfg = result["complexity"], result["config"]
    acc = np.asarray(c["accuracy"])
    fig, ax = plt.subplots(figsize=(6, 4))
    pct = 100 * np.asarray(cfg["cc_fractions"])
    for i, lam in enumerate(cfg["cc_lams"]):
        m = acc[:, i, :].mean(0)
        ax.plot(pct, m, "o-", ms=3, label=f"λ = {lam:g}")
        if acc.shape[0] > 1:
            ax.fill_between(pct, acc[:, i, :].min(0), acc[:, i, :].max(0), alpha=0.15)
    ax.set_xlabel("Pruned parameters percent")
    ax.set_ylabel("Accuracy")
    ax.set_title("MLP 64-32-10 with hypernetwork (digits)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{out}/complexity_pruning.png", dpi=120)


if __name__ == "__main__":
    main()
