"""Evidence from the entropy of gradient descent (Duvenaud, Maclaurin & Adams 2016) on diabetes.

Per seed: a random split of scikit-learn's diabetes into 50 training and 392 held-out
patients (the paper's Boston-housing run trains on 10% of the data), a network with one hidden
layer of sigmoid units, Gaussian likelihood (noise 1 on the standardised target), no prior
or regularisation in the objective. An ensemble of 10 gradient-descent runs (lr 4e-4 on the
summed negative log-likelihood) starts from q_0 = N(0, 0.3^2 I); each step's entropy change
is the Hutchinson estimate (one Rademacher probe per run and step) of
-lr Tr H - lr^2 Tr H^2 / 2 (:mod:`metaopt.gd_entropy`). Reported per step (ensemble means):

    estimate = [ mean_g log p(Y_train | w_t^g) + S(q_0) + sum_{b<t} mean_g dS_b^g ] / n_train
    ELBO     = estimate + mean_g log N(w_t^g; 0, 0.3^2 I) / n_train   (with the prior = q_0)

against the held-out log-likelihood per example (mean over the ensemble). Part 1: width 100,
2,000 steps: where each curve peaks. Part 2: widths 3-300: the width each criterion picks.

    .venv/bin/python -m experiments.gd_evidence.run [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import hypergrad_common as common
from experiments.gd_evidence import problem
from metaopt import gd_entropy

WIDTH, N_TRAIN, INIT, LR, STEPS, ENSEMBLE = 100, 50, 0.3, 4e-4, 2000, 10
WIDTHS, SWEEP_STEPS = (3, 10, 30, 100, 300), 1000
CURVES = ("estimate", "elbo", "test", "train")


def trajectories(width: int, steps: int, ensemble: int):
    """``f(split, key) -> {curve: [steps]}``: the ensemble-mean curves of one seed."""
    dim = problem.num_params(width)
    s0 = gd_entropy.gaussian_entropy(dim, INIT)

    def f(split: problem.Split, key):
        def loss(w):
            return -jnp.sum(problem.log_lik(w, split.x_train, split.y_train, width))

        def metrics(w):
            return {"test": jnp.mean(problem.log_lik(w, split.x_test, split.y_test, width)),
                    "prior": gd_entropy.gaussian_log_prior(w, INIT)}

        k_init, k_run = jax.random.split(key)
        w0 = INIT * jax.random.normal(k_init, (ensemble, dim))
        tr = jax.vmap(lambda w, k: gd_entropy.gd_entropy_run(
            loss, w, k, lr=LR, steps=steps, metrics_fn=metrics))(
            w0, jax.random.split(k_run, ensemble))
        n = split.y_train.shape[0]
        train_ll = -jnp.mean(tr.loss, 0)
        d_s = jnp.mean(tr.delta_entropy, 0)
        entropy = s0 + jnp.concatenate([jnp.zeros(1), jnp.cumsum(d_s)[:-1]])
        est = (train_ll + entropy) / n
        return {"estimate": est, "elbo": est + jnp.mean(tr.metrics["prior"], 0) / n,
                "test": jnp.mean(tr.metrics["test"], 0), "train": train_ll / n,
                "entropy": entropy / n}

    return f


def run_seeds(width, steps, ensemble, seeds, opts):
    splits = [problem.diabetes_split(s, N_TRAIN) for s in range(seeds)]
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *splits)
    keys = jnp.stack([jax.random.key(100 + s) for s in range(seeds)])
    fn = jax.jit(jax.vmap(trajectories(width, steps, ensemble)), compiler_options=opts)
    return {k: np.asarray(v, np.float64) for k, v in fn(stacked, keys).items()}


def peaks(c: dict) -> dict:
    """Per seed: the peak steps and the held-out log-likelihood at them."""
    t_est, t_elbo, t_test = (np.argmax(c[k], 1) for k in ("estimate", "elbo", "test"))
    rows = np.arange(c["test"].shape[0])
    return {"step_estimate_peak": t_est, "step_elbo_peak": t_elbo, "step_test_peak": t_test,
            "test_at_estimate_peak": c["test"][rows, t_est],
            "test_at_elbo_peak": c["test"][rows, t_elbo],
            "test_best": c["test"].max(1), "test_final": c["test"][:, -1],
            "train_at_estimate_peak": c["train"][rows, t_est],
            "train_final": c["train"][:, -1], "estimate_max": c["estimate"].max(1),
            "elbo_max": c["elbo"].max(1)}


def main(argv=None) -> dict:
    args = common.base_parser(__doc__, "experiments/gd_evidence/results").parse_args(argv)
    steps, sweep_steps = (200, 200) if args.smoke else (STEPS, SWEEP_STEPS)
    ensemble = 2 if args.smoke else ENSEMBLE
    widths = (WIDTH,) if args.smoke else WIDTHS
    opts = common.FAST_COMPILE if args.smoke else None
    started = time.time()
    curves = run_seeds(WIDTH, steps, ensemble, args.seeds, opts)
    main_peaks = peaks(curves)
    print(f"width {WIDTH}: {time.time() - started:.1f} s", flush=True)
    sweep = {}
    for width in widths:
        t0 = time.time()
        c = curves if (width == WIDTH and sweep_steps == steps) else run_seeds(
            width, sweep_steps, ensemble, args.seeds, opts)
        sweep[width] = peaks({k: v[:, :sweep_steps] for k, v in c.items()})
        print(f"width {width}: {time.time() - t0:.1f} s", flush=True)
    idx = np.unique(np.geomspace(1, steps, 300).astype(int) - 1)  # log-spaced, from step 0
    result = {
        "seeds": args.seeds, "smoke": args.smoke,
        "config": {"width": WIDTH, "n_train": N_TRAIN, "init_std": INIT, "lr": LR,
                   "steps": steps, "ensemble": ensemble, "noise": problem.NOISE,
                   "sweep_steps": sweep_steps, "widths": list(widths)},
        "curves": {"steps": idx.tolist(), **{k: v[:, idx].tolist() for k, v in curves.items()}},
        "peaks": {k: v.tolist() for k, v in main_peaks.items()},
        "sweep": {str(w): {k: v.tolist() for k, v in p.items()} for w, p in sweep.items()},
    }
    table = _table(main_peaks, sweep)
    common.save(args.out, "gd_evidence", result, table, started)
    _plot(result, f"{args.out}/gd_evidence.png")
    return result


def _table(p, sweep):
    f = common.fmt
    rows = [["estimate (seed's formula)", f(p["step_estimate_peak"], 1, 0),
             f(p["test_at_estimate_peak"], 1, 3), f(p["train_at_estimate_peak"], 1, 3)],
            ["ELBO (estimate + log prior)", f(p["step_elbo_peak"], 1, 0),
             f(p["test_at_elbo_peak"], 1, 3), "-"],
            ["held-out log-lik (oracle)", f(p["step_test_peak"], 1, 0), f(p["test_best"], 1, 3),
             "-"],
            ["end of training", "-", f(p["test_final"], 1, 3), f(p["train_final"], 1, 3)]]
    part1 = common.markdown_table(
        ["stopping rule (width 100)", "step of peak", "held-out log-lik / example",
         "train log-lik / example"], rows)
    rows = [[w, f(s["estimate_max"], 1, 3), f(s["elbo_max"], 1, 3), f(s["test_at_estimate_peak"],
             1, 3), f(s["test_best"], 1, 3), f(s["test_final"], 1, 3)] for w, s in sweep.items()]
    picks = {k: max(sweep, key=lambda w, k=k: np.mean(sweep[w][k]))
             for k in ("estimate_max", "elbo_max", "test_at_estimate_peak", "test_best")}
    part2 = common.markdown_table(
        ["width", "max estimate", "max ELBO", "held-out at estimate's peak", "best held-out",
         "held-out at end"], rows)
    note = (f"Width picked by: max estimate {picks['estimate_max']}, max ELBO "
            f"{picks['elbo_max']}, best held-out (oracle) {picks['test_best']}, held-out at the "
            f"estimate's peak {picks['test_at_estimate_peak']}.")
    return part1 + "\n\n" + part2 + "\n\n" + note


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = result["curves"]
    x = np.asarray(c["steps"]) + 1
    p = result["peaks"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = ((axes[0], (("estimate", "log-evidence estimate (seed's formula)"),
                         ("elbo", "ELBO (estimate + log prior)"))),
              (axes[1], (("test", "held-out log-lik"), ("train", "train log-lik"))))
    for ax, keys in panels:
        for key, label in keys:
            m = np.mean(c[key], 0)
            ax.plot(x, m, label=label)
        ax.axvline(np.mean(p["step_estimate_peak"]) + 1, color="k", ls="--",
                   label="estimate's peak (mean)")
        ax.axvline(np.mean(p["step_test_peak"]) + 1, color="g", ls=":",
                   label="held-out peak (mean)")
        ax.set_xscale("log")
        ax.set_xlabel("GD step + 1")
        ax.set_ylabel("per training / held-out example")
        ax.legend(fontsize=7)
    est = np.mean(c["estimate"], 0)
    axes[0].set_ylim(max(est.min(), est.max() - 40), est.max() + 2)
    axes[1].set_ylim(np.mean(c["test"], 0).max() - 0.5, np.mean(c["train"], 0).max() + 0.1)
    widths = sorted(int(w) for w in result["sweep"])
    for key, label in (("elbo_max", "max ELBO"), ("test_best", "best held-out"),
                       ("test_at_estimate_peak", "held-out at estimate's peak"),
                       ("test_final", "held-out at end")):
        axes[2].plot(widths, [np.mean(result["sweep"][str(w)][key]) for w in widths], "o-",
                     label=label)
    twin = axes[2].twinx()
    twin.plot(widths, [np.mean(result["sweep"][str(w)]["estimate_max"]) for w in widths],
              "k^--", label="max estimate (right axis)")
    twin.legend(fontsize=7, loc="lower right")
    axes[2].set_xscale("log")
    axes[2].set_xlabel("hidden units")
    axes[2].set_ylabel("per example")
    axes[2].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
