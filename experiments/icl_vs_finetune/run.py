"""In-context learning vs fine-tuning in a small linear-attention transformer (Dai et al. 2022).

Per model size and seed: meta-train a causal linear-attention transformer
(:mod:`metaopt.linear_transformer`) on in-context linear classification (``d = 8``, ``K = 16``
demonstrations, ``M = 8`` queries, :mod:`tasks.in_context`); then on fresh test episodes
compare zero-shot (ZSL), in-context (ICL) and fine-tuned (FT: GD on every layer's key and
value projections on the demonstrations, :mod:`.problem`; the FT learning rate chosen per model
on validation episodes) with Dai et al.'s Rec2FTP, SimAOU (+ random baseline) and SimAM (+ ZSL
baseline) (:mod:`metaopt.icl_metrics`). Mean ± 95% CI over seeds.

    .venv/bin/python -m experiments.icl_vs_finetune.run [--seeds 5] [--steps 400] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import hypergrad_common as common
from experiments import icl_common as icl
from experiments.icl_vs_finetune import problem

SCALARS = ("rec2ftp", "simaou", "random_simaou", "simam", "zsl_simam", "acc_zsl", "acc_icl",
           "acc_ft", "rec2ftp_count")


def run_size(size, seeds: int, steps: int, n_val: int, n_test: int, opts,
             ft_lrs=problem.FT_LRS) -> dict:
    """Train ``seeds`` models of one size (one vmapped program), pick each one's FT learning
    rate on validation episodes, and compute the metrics on test episodes."""
    model = icl.make_model(size)
    keys = icl.seed_keys(seeds)
    params, curves = jax.jit(jax.vmap(lambda k: icl.train(model, k, steps)),
                             compiler_options=opts)(keys)
    lrs = jnp.asarray(ft_lrs)

    def per_seed(p, key):
        k_val, k_test, k_rand, k_init = jax.random.split(key, 4)
        if len(ft_lrs) > 1:  # choose the FT learning rate on validation episodes
            val = icl.episodes(k_val, n_val)
            acc = jax.vmap(lambda lr: problem.ft_accuracy(model, p, val, lr))(lrs)
            lr = lrs[jnp.argmax(acc)]
        else:
            acc, lr = jnp.full((1,), jnp.nan), lrs[0]
        out = problem.metrics(model, p, icl.episodes(k_test, n_test), lr, k_rand)
        untrained = model.init(k_init, jnp.zeros((1, 2, icl.X_DIM + 1)))
        test = icl.episodes(k_test, n_test)  # the same episodes metrics() saw
        # reference: one GD step from w = 0 on the demonstrations' squared loss, i.e. one
        # layer of linear attention with W_K = W_Q = I: y_q = sum_i y_i x_i . x_q
        one_step = jnp.einsum("bkd,bk,bmd->bm", test.demo_x, test.demo_y, test.query_x)
        return {**out, "ft_lr": lr, "ft_val_acc": acc,
                "acc_one_gd_step": 100.0 * jnp.mean(jnp.sign(one_step) == test.query_y),
                "acc_icl_untrained": 100.0 * jnp.mean(
                    jnp.sign(icl.query_predictions(model, untrained, test)) == test.query_y)}

    res = jax.jit(jax.vmap(per_seed), compiler_options=opts)(
        params, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
    res = jax.tree.map(np.asarray, res)
    out = {k: v.tolist() for k, v in res.items()}
    out["final_train_loss"] = np.asarray(curves[:, -max(1, steps // 20):].mean(1)).tolist()
    out["loss_curve"] = np.asarray(curves.mean(0)).tolist()
    return out


def tables(result: dict) -> str:
    names = result["sizes"]
    runs = result["runs"]
    main = common.markdown_table(
        ["Model", "Task", "Rec2FTP", "SimAOU", "Random SimAOU", "SimAM", "ZSL SimAM"],
        [[n, result["task"], common.fmt(runs[n]["rec2ftp"], digits=2),
          *[common.fmt(runs[n][k], digits=3)
            for k in ("simaou", "random_simaou", "simam", "zsl_simam")]] for n in names])
    acc = common.markdown_table(
        ["Model", "ZSL acc %", "ICL acc %", "FT acc %", "ICL acc %, untrained model",
         "one GD step Σ y_i x_i (reference)",
         "FT lr (per seed)", "FT>ZSL queries / seed"],
        [[n, *[common.fmt(runs[n][k]) for k in ("acc_zsl", "acc_icl", "acc_ft",
                                                "acc_icl_untrained", "acc_one_gd_step")],
          ", ".join(f"{v:g}" for v in runs[n]["ft_lr"]),
          f"{np.mean(runs[n]['rec2ftp_count']):.0f}"] for n in names])
    layers = common.markdown_table(
        ["Model", "layer", "SimAOU", "SimAM", "ZSL SimAM"],
        [[n, str(layer + 1), *[common.fmt(np.asarray(runs[n][k])[:, layer], digits=3)
                               for k in ("simaou_per_layer", "simam_per_layer",
                                         "zsl_simam_per_layer")]]
         for n in names for layer in range(np.asarray(runs[n]["simam_per_layer"]).shape[1])])
    def paired(n, a, b, from_layer=0):
        a, b = np.asarray(runs[n][a]), np.asarray(runs[n][b])
        if a.ndim == 2:  # per layer: average the chosen layers
            a, b = a[:, from_layer:].mean(1), b[:, from_layer:].mean(1)
        return common.fmt(a - b, digits=3)

    diffs = common.markdown_table(
        ["Model", "SimAOU − random SimAOU", "SimAM − ZSL SimAM (all layers)",
         "SimAM − ZSL SimAM (layers ≥ 2)"],
        [[n, paired(n, "simaou", "random_simaou"), paired(n, "simam", "zsl_simam"),
          paired(n, "simam_per_layer", "zsl_simam_per_layer", 1)] for n in names])
    return "\n\n".join([main, acc, layers, diffs])


def main(argv=None) -> dict:
    args = icl.parse_args(__doc__, "experiments/icl_vs_finetune/results", argv)
    smoke = args.smoke
    sizes = list(icl.SIZES)[:1] if smoke else list(icl.SIZES)
    steps = min(args.steps, 60) if smoke else args.steps
    n_val, n_test = (16, 32) if smoke else (128, 512)
    opts = common.FAST_COMPILE if smoke else None
    ft_lrs = (0.3,) if smoke else problem.FT_LRS
    started = time.time()
    runs = {}
    for name in sizes:
        t0 = time.time()
        runs[name] = run_size(icl.SIZES[name], args.seeds, steps, n_val, n_test, opts,
                              ft_lrs)
        print(f"{name}: {time.time() - t0:.1f} s", flush=True)
    result = {"sizes": sizes, "size_spec": {n: icl.SIZES[n] for n in sizes}, "seeds": args.seeds,
              "steps": steps, "task": f"linear cls d={icl.X_DIM}, K={icl.DEMOS}",
              "demos": icl.DEMOS, "queries": icl.QUERIES, "n_val": n_val, "n_test": n_test,
              "ft_steps": problem.FT_STEPS, "ft_lrs": list(ft_lrs), "runs": runs}
    common.save(args.out, "icl_vs_finetune", result, tables(result), started)
    plot(result, f"{args.out}/icl_vs_finetune.png")
    return result


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, runs = result["sizes"], result["runs"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(names))
    for ax, pairs, title in (
            (axes[0], (("simaou", "SimAOU (ICL vs FT)"), ("random_simaou", "random SimAOU")),
             "attention-output updates"),
            (axes[1], (("simam", "SimAM (ICL vs FT)"), ("zsl_simam", "ZSL SimAM")),
             "attention maps")):
        for i, (key, label) in enumerate(pairs):
            stats = [common.mean_ci(runs[n][key]) for n in names]
            ax.bar(x + 0.38 * i, [m for m, _ in stats], 0.38,
                   yerr=[np.nan_to_num(h) for _, h in stats], label=label)
        ax.set_xticks(x + 0.19, [n.split(" ")[0] for n in names])
        ax.set_ylabel("cosine (mean ± 95% CI)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    for key, label in (("acc_zsl", "ZSL"), ("acc_ft", "FT"), ("acc_icl", "ICL")):
        stats = [common.mean_ci(runs[n][key]) for n in names]
        axes[2].errorbar(x, [m for m, _ in stats], [np.nan_to_num(h) for _, h in stats],
                         marker="o", capsize=3, label=label)
    axes[2].set_xticks(x, [n.split(" ")[0] for n in names])
    axes[2].set_ylabel("query accuracy %")
    axes[2].set_title("accuracy by setting")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
