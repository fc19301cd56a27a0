"""The LSTM optimizer (Andrychowicz et al. 2016, "Learning to learn by gradient descent by
gradient descent"): meta-train the coordinatewise two-layer LSTM (20 units, log|g|/p and sign g
preprocessing, p = 10) by truncated backprop (20-step truncations of 100-step episodes) on
random 10-d quadratics ||W theta - y||^2 and on the digits MLP (one hidden layer of 20 sigmoid
units, batch 128); compare its loss curves on held-out tasks with SGD, momentum, NAG, RMSprop and
Adam at their best learning rates, and test the MLP optimizer on 2x its training horizon, 40
hidden units, 2 hidden layers and ReLU.

    .venv/bin/python -m experiments.lstm_optimizer.run [--seeds 5] [--quad-meta-seeds 5]
        [--mlp-meta-seeds 1] [--out DIR]

``--seeds``: evaluation seeds (each a batch of held-out task instances); ``--*-meta-seeds``:
independent meta-training runs (vmapped: one compilation). ``--smoke``: quadratics and the MLP
with a few outer steps, a 3-point grid and fast compilation (the pipeline, not the numbers).
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import hypergrad_common as common
from metaopt import lopt
from metaopt.estimators.tbptt import truncated_backprop
from metaopt.inner import inner_problem, truncation
from metaopt.outer import outer_trainer
from metaopt.tasks import least_squares_family, mlp_classifier
from metaopt.train import baselines as bl

HORIZON, UNROLL = 100, 20  # the paper's episodes and truncations

#: per problem: LSTM output scale, outer Adam lr, outer clip, tasks per truncation, outer
#: steps, evaluation steps, task instances per evaluation seed
CONFIGS = {
    "quadratic": dict(out_scale=0.1, outer_lr=3e-3, clip=10.0, num_tasks=16, outer_steps=500,
                      eval_steps=HORIZON, eval_tasks=20),
    "mlp": dict(out_scale=0.1, outer_lr=3e-3, clip=10.0, num_tasks=4, outer_steps=150,
                eval_steps=2 * HORIZON, eval_tasks=4),
}
SMOKE = dict(outer_steps=20, num_tasks=4, eval_tasks=2)
#: MLP evaluation settings: (hidden widths, activation); the first is the training setting
MLP_SETTINGS = {
    "sigmoid 20 (trained on)": ((20,), "sigmoid"),
    "sigmoid 40 units": ((40,), "sigmoid"),
    "sigmoid 2 layers (20, 20)": ((20, 20), "sigmoid"),
    "ReLU 20": ((20,), "relu"),
}
LSTM, UNTRAINED = "LSTM (meta-trained)", "LSTM (untrained start)"


def lstm(out_scale: float) -> lopt.LearnedOptimizer:
    """The paper's architecture: no linear skip, output ``out_scale * (h_2 W + b)``."""
    return lopt.lstm_lopt(hidden=(20, 20), p=10.0, out_scale=out_scale, skip="none")


def digits_mlp(hidden, activation):
    return mlp_classifier(hidden=hidden, activation=activation, batch_size=128)


def meta_train(family, lo, *, meta_seeds: int, outer_steps: int, num_tasks: int,
               outer_lr: float, clip: float, chunk: int = 50, compiler_options=None):
    """TBPTT meta-training of ``lo`` on ``family``, ``meta_seeds`` runs vmapped together.

    Returns ``(theta_init [M], theta_trained [M], meta_loss [M, outer_steps])``.
    """
    ip = inner_problem(family, lo.optimizer, schedule=truncation.constant(HORIZON), valid=False)
    est = truncated_backprop(ip, num_tasks=num_tasks, unroll_length=UNROLL, meta_loss="train")
    trainer = outer_trainer(est, optax.adam(outer_lr), clip_norm=clip)
    seeds = [jax.random.key(s) for s in range(meta_seeds)]
    theta0 = jax.vmap(lo.init)(jnp.stack([jax.random.fold_in(k, 0) for k in seeds]))
    state = jax.jit(jax.vmap(trainer.init))(jnp.stack([jax.random.fold_in(k, 1) for k in seeds]),
                                            theta0)

    def run_chunk(state, keys):  # keys [chunk, M]
        return jax.lax.scan(lambda s, k: jax.vmap(trainer.step)(k, s), state, keys)

    run_chunk = jax.jit(run_chunk, compiler_options=compiler_options)
    losses = []
    for start in range(0, outer_steps, chunk):
        n = min(chunk, outer_steps - start)
        keys = jnp.stack([jax.random.split(jax.random.fold_in(k, 2 + start), n) for k in seeds], 1)
        state, metrics = run_chunk(state, keys)
        losses.append(np.asarray(metrics["meta_loss"]))  # [n, M]
    return theta0, state.theta, np.concatenate(losses).T


def eval_lstm(family, lo, thetas, eval_keys, steps: int, num_tasks: int,
              compiler_options=None) -> dict:
    """Loss curves ``[M, S, tasks, steps]`` of each of ``thetas`` ([M]) on the instances of
    each of ``eval_keys`` ([S]); the same instances for every theta."""
    m = jax.tree.leaves(thetas)[0].shape[0]
    s = eval_keys.shape[0]
    pairs = jax.tree.map(lambda x: jnp.repeat(x, s, axis=0), thetas)
    c = bl.batched_curves(family, lo.optimizer, pairs, jnp.concatenate([eval_keys] * m), steps,
                          num_tasks, compiler_options)
    return {k: v.reshape(m, s, *v.shape[1:]) for k, v in c.items()}


def compare(family, lo, theta0, thetas, cfg, keys, lrs, compiler_options=None) -> dict:
    """Every optimizer's curves on the held-out instances; finals per evaluation seed."""
    steps, n = cfg["eval_steps"], cfg["eval_tasks"]
    both = jax.tree.map(lambda a, b: jnp.concatenate([a[:1], b]), theta0, thetas)
    lstm_c = eval_lstm(family, lo, both, keys["eval"], steps, n, compiler_options)
    runs = {UNTRAINED: {"loss": lstm_c["loss"][0], "diverged": lstm_c["diverged"][0]},
            LSTM: {"loss": lstm_c["loss"][1], "diverged": lstm_c["diverged"][1]}}
    runs.update(bl.tuned_baselines(family, steps, n, keys["tune"], keys["eval"], lrs,
                                   compiler_options=compiler_options))
    out = {}
    for name, r in runs.items():
        out[name] = {"lr": r.get("lr"), "grid_final": r.get("grid_final"),
                     "final": bl.final_loss(r["loss"], r["diverged"]).tolist(),
                     "final_at_horizon": bl.final_loss(r["loss"][..., :HORIZON],
                                                       r["diverged"]).tolist(),
                     "curve": np.mean(r["loss"], axis=(0, 1)).tolist(),
                     "diverged": int(np.sum(r["diverged"]))}
    # every meta-training seed: its mean final over the evaluation seeds
    per_meta = bl.final_loss(lstm_c["loss"][1:], lstm_c["diverged"][1:])  # [M, S]
    out[LSTM]["final_per_meta_seed"] = np.mean(per_meta, axis=1).tolist()
    return out


def table(results: dict, seeds: int) -> str:
    lines = []
    for setting, res in results.items():
        mlp = setting != "quadratic"
        steps = len(res[LSTM]["curve"])
        header = ["optimizer", "lr", f"final loss ({steps} steps)"]
        header += [f"loss at the training horizon ({HORIZON})"] if mlp else []
        rows = []
        order = sorted(res, key=lambda k: float(np.mean(res[k]["final"])))
        for name in order:
            r = res[name]
            lr = "—" if r["lr"] is None else f"{r['lr']:.3g}"
            row = [name, lr, common.fmt(r["final"], digits=3)]
            row += [common.fmt(r["final_at_horizon"], digits=3)] if mlp else []
            rows.append(row)
        best = min(bl.OPTAX_BASELINES, key=lambda k: float(np.mean(res[k]["final"])))
        diff = np.asarray(res[LSTM]["final"]) - np.asarray(res[best]["final"])
        rows.append([f"LSTM − {best} (paired over seeds)", "—", common.fmt(diff, digits=3)]
                    + (["—"] if mlp else []))
        per_meta = res[LSTM]["final_per_meta_seed"]
        if len(per_meta) > 1:
            row = [f"LSTM over {len(per_meta)} meta-training seeds", "—",
                   common.fmt(per_meta, digits=3)]
            rows.append(row + (["—"] if mlp else []))
        lines += [f"**{setting}** (mean ± 95% CI over {seeds} evaluation seeds; "
                  f"meta-trained row: meta-training seed 0)", "",
                  common.markdown_table(header, rows), ""]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = list(result["results"])
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for ax, setting in zip(axes.flat, settings):
        for name, r in result["results"][setting].items():
            label = name if r["lr"] is None else f"{name} (lr {r['lr']:.2g})"
            style = dict(color="k", lw=2) if name == LSTM else (
                dict(color="grey", ls="--") if name == UNTRAINED else dict(lw=1))
            ax.plot(np.arange(len(r["curve"])), r["curve"], label=label, **style)
        if setting != "quadratic":
            ax.axvline(HORIZON, color="k", ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_title(setting)
        ax.set_xlabel("inner step")
        ax.set_ylabel("training loss")
        ax.legend(fontsize=7)
    ax = axes.flat[len(settings)]
    for problem, curves in result["meta_loss"].items():
        for i, c in enumerate(curves):
            ax.plot(c, color="C0" if problem == "quadratic" else "C3", alpha=0.6,
                    label=problem if i == 0 else None)
    ax.set_yscale("log")
    ax.set_title("meta-training (TBPTT): mean loss per truncation")
    ax.set_xlabel("outer step")
    ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(settings) + 1:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict:
    p = common.base_parser(__doc__, "experiments/lstm_optimizer/results")
    p.add_argument("--quad-meta-seeds", type=int, default=5,
                   help="independent meta-training runs on the quadratics")
    p.add_argument("--mlp-meta-seeds", type=int, default=1,
                   help="independent meta-training runs on the digits MLP")
    args = p.parse_args(argv)
    meta_seeds = {"quadratic": args.quad_meta_seeds, "mlp": args.mlp_meta_seeds}
    if args.seeds < 2 or min(meta_seeds.values()) < 1:
        p.error("--seeds must be >= 2 and --quad-meta-seeds, --mlp-meta-seeds >= 1")
    started = time.time()
    opts = common.FAST_COMPILE if args.smoke else None
    lrs = (1e-3, 1e-2, 1e-1) if args.smoke else bl.LR_GRID
    keys = {"tune": jax.random.key(10_000),
            "eval": jax.random.split(jax.random.key(20_000), args.seeds)}
    results, meta_loss, configs = {}, {}, {}
    for problem, cfg in CONFIGS.items():
        cfg = {**cfg, **(SMOKE if args.smoke else {})}
        configs[problem] = cfg
        lo = lstm(cfg["out_scale"])
        train_family = least_squares_family() if problem == "quadratic" else digits_mlp(
            *MLP_SETTINGS["sigmoid 20 (trained on)"])
        t0 = time.time()
        theta0, thetas, curves = meta_train(
            train_family, lo, meta_seeds=meta_seeds[problem], outer_steps=cfg["outer_steps"],
            num_tasks=cfg["num_tasks"], outer_lr=cfg["outer_lr"], clip=cfg["clip"],
            compiler_options=opts)
        print(f"{problem}: meta-trained in {time.time() - t0:.0f} s", flush=True)
        meta_loss[problem] = curves.tolist()
        settings = {"quadratic": train_family} if problem == "quadratic" else {
            name: digits_mlp(*spec) for name, spec in MLP_SETTINGS.items()}
        for name, family in settings.items():
            t0 = time.time()
            results[name] = compare(family, lo, theta0, thetas, cfg, keys, lrs, opts)
            print(f"{name}: evaluated in {time.time() - t0:.0f} s", flush=True)
    result = {"seeds": args.seeds, "meta_seeds": meta_seeds, "horizon": HORIZON,
              "unroll": UNROLL, "configs": configs, "lr_grid": list(lrs), "smoke": args.smoke,
              "mlp_settings": {k: [list(v[0]), v[1]] for k, v in MLP_SETTINGS.items()},
              "results": results, "meta_loss": meta_loss}
    common.save(args.out, "lstm_optimizer", result, table(results, args.seeds),
                started)
    plot(result, f"{args.out}/lstm_optimizer.png")
    return result


if __name__ == "__main__":
    main()
