"""RNN black-box optimizer (Chen et al. 2017) vs random search and GP-EI.

Per dimension d in (2, 3, 6): an LSTM query policy (:func:`metaopt.blackbox.rnn_policy`,
2 x 64 units) is meta-trained by backprop through its ``T`` queries on functions sampled from
a GP prior (:func:`metaopt.tasks.gp_functions`: random Fourier features of an RBF kernel,
length scale log-uniform in [0.2, 0.5], on [0, 1]^d), once with the observed-improvement loss
(RNN-OI) and once with the summed loss (RNN-sum). Then every method -- random search, GP with
expected improvement (scikit-learn), the untrained RNN, RNN-sum, RNN-OI -- spends ``T`` queries
from the same uniformly drawn first point, on held-out GP samples (one per seed) and on the
test function of that dimension (Branin, Hartmann-3, Hartmann-6 on their domains mapped to the
unit box; a seed draws the first point). Reported: best value found after ``t`` queries (GP
samples) or regret ``f_best - f*`` (test functions), mean ± 95% CI over seeds.

    .venv/bin/python -m experiments.blackbox_rnn.run [--smoke] [--seeds 10] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import hypergrad_common as common
from metaopt import blackbox as bb
from metaopt.outer import outer_trainer
from metaopt.tasks.gp_functions import gp_functions, gp_value
from metaopt.tasks.testfns import TEST_FUNCTIONS, on_unit_box

PROBLEMS = {2: "branin", 3: "hartmann3", 6: "hartmann6"}
HORIZON = {2: 30, 3: 30, 6: 40}
LENGTHSCALE = (0.2, 0.5)
HIDDEN = (64, 64)
BATCH, OUTER_STEPS, OUTER_LR, CLIP = 64, 500, 3e-3, 1.0
LOSS_NAMES = {"oi": "RNN-OI", "sum": "RNN-sum"}
METHODS = ("random search", "GP-EI", "RNN untrained", "RNN-sum", "RNN-OI")


def meta_train(dim, loss, horizon, steps, batch, seed=0, opts=None, hidden=HIDDEN,
               lr=OUTER_LR):
    """Meta-train the policy of ``dim`` with ``loss``: (theta0, theta, curve of the batch's mean
    best value per outer step)."""
    policy = bb.rnn_policy(dim, hidden)
    est = bb.blackbox_backprop(policy, gp_functions(dim, lengthscale=LENGTHSCALE),
                               horizon=horizon, num_tasks=batch, loss=loss)
    sched = optax.cosine_decay_schedule(lr, steps, alpha=0.1)
    trainer = outer_trainer(est, optax.adam(sched), clip_norm=CLIP)
    k_init, k_run = jax.random.split(jax.random.key(seed))
    theta0 = policy.init(k_init)

    def run(theta):
        state = trainer.init(k_init, theta)
        state, m = jax.lax.scan(lambda s, k: trainer.step(k, s), state,
                                jax.random.split(k_run, steps))
        return state.theta, m["best"]

    theta, curve = jax.jit(run, compiler_options=opts)(theta0)
    return theta0, theta, np.asarray(curve)


def standardiser(fn, dim):
    """``(mu, sd)`` of ``fn`` under uniform inputs (4096 fixed points): the RNN's input scale."""
    v = jax.vmap(fn)(jax.random.uniform(jax.random.key(777), (4096, dim)))
    return float(jnp.mean(v)), float(jnp.std(v))


def evaluate(dim, thetas, seeds, horizon, opts=None):
    """Best-so-far curves ``[seeds, T]`` (minus ``f*`` on the test function) of every method
    on held-out GP samples and on the test function of ``dim``; ``thetas``: name -> policy
    weights. Also the wall seconds per query of each method."""
    family = gp_functions(dim, lengthscale=LENGTHSCALE)
    policy = bb.rnn_policy(dim, HIDDEN)
    spec = TEST_FUNCTIONS[PROBLEMS[dim]]
    test_fn = on_unit_box(spec)
    mu, sd = standardiser(test_fn, dim)
    keys = jnp.stack([jax.random.key(100_000 + s) for s in range(seeds)])
    cfgs = jax.vmap(family.sample)(jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
    x1s = jax.vmap(lambda k: jax.random.uniform(jax.random.fold_in(k, 2), (dim,)))(keys)
    rs_keys = jax.vmap(lambda k: jax.random.fold_in(k, 3))(keys)
    problems = {
        "gp": (lambda cfg: lambda x: gp_value(cfg, x), 0.0, 1.0, 0.0),
        "test": (lambda cfg: test_fn, mu, sd, spec.f_min),
    }
    out, timing = {}, {}
    for pname, (make_fn, m, s, f_min) in problems.items():
        def rnn(th, cfg, x1, make_fn=make_fn, m=m, s=s):
            fn = make_fn(cfg)
            _, ys = bb.rollout(policy, th, lambda x: (fn(x) - m) / s, x1, horizon)
            return ys * s + m

        def rs(k, cfg, x1, make_fn=make_fn):
            return bb.random_search(k, make_fn(cfg), x1, horizon)

        go = jax.jit(jax.vmap(rnn, in_axes=(None, 0, 0)), compiler_options=opts)
        runs = {"random search": jax.jit(jax.vmap(rs), compiler_options=opts)(
            rs_keys, cfgs, x1s)}
        for name, theta in thetas.items():
            go(theta, cfgs, x1s).block_until_ready()  # compiled once, timed warm
            t0 = time.time()
            runs[name] = go(theta, cfgs, x1s).block_until_ready()
            timing[name] = (time.time() - t0) / (seeds * horizon)
        ei, t0 = [], time.time()
        for i in range(seeds):
            fn = jax.jit(make_fn(jax.tree.map(lambda a, i=i: a[i], cfgs)))
            ei.append(bb.gp_ei(lambda x, fn=fn: float(fn(jnp.asarray(x, jnp.float32))),
                               np.asarray(x1s[i]), horizon, np.random.default_rng(i)))
        timing["GP-EI"] = (time.time() - t0) / (seeds * horizon)
        runs["GP-EI"] = np.asarray(ei)
        out[pname] = {k: (np.asarray(bb.best_so_far(jnp.asarray(v))) - f_min).tolist()
                      for k, v in runs.items()}
    return out, timing


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, "experiments/blackbox_rnn/results")
    parser.add_argument("--outer-steps", type=int, default=OUTER_STEPS)
    args = parser.parse_args(argv)
    if args.seeds < 2:
        parser.error("--seeds: need at least 2 for a confidence interval")
    dims = (2,) if args.smoke else tuple(PROBLEMS)
    steps = 40 if args.smoke else args.outer_steps
    batch = 16 if args.smoke else BATCH
    opts = common.FAST_COMPILE if args.smoke else None
    losses = {"oi": "RNN-OI"} if args.smoke else LOSS_NAMES
    started = time.time()
    result = {"seeds": args.seeds, "outer_steps": steps, "batch": batch,
              "outer_lr": OUTER_LR, "hidden": list(HIDDEN), "lengthscale": list(LENGTHSCALE),
              "dims": list(dims), "runs": {}, "train_curves": {}, "seconds_per_query": {}}
    for dim in dims:
        horizon = 10 if args.smoke else HORIZON[dim]
        thetas = {}
        for loss, name in losses.items():
            t0 = time.time()
            theta0, theta, curve = meta_train(dim, loss, horizon, steps, batch, opts=opts)
            thetas.setdefault("RNN untrained", theta0)
            thetas[name] = theta
            result["train_curves"][f"{dim}d {name}"] = curve.tolist()
            print(f"d={dim} {name}: meta-trained in {time.time() - t0:.1f} s", flush=True)
        t0 = time.time()
        runs, timing = evaluate(dim, thetas, args.seeds, horizon, opts)
        result["runs"][str(dim)] = {"horizon": horizon, **runs}
        result["seconds_per_query"][str(dim)] = timing
        print(f"d={dim}: evaluated in {time.time() - t0:.1f} s", flush=True)
    common.save(args.out, "blackbox", result, table(result), started)
    plot(result, f"{args.out}/blackbox.png")
    return result


def table(result: dict) -> str:
    rows = []
    for dim in result["dims"]:
        r = result["runs"][str(dim)]
        horizon = r["horizon"]
        shown = [min(10, horizon), horizon // 2, horizon]
        for pname, label in (("gp", f"GP samples {dim}-d (best f)"),
                             ("test", f"{PROBLEMS[dim]} (regret)")):
            for method in [m for m in METHODS if m in r[pname]]:
                c = np.asarray(r[pname][method])
                rows.append([label, method, len(c),
                             *[common.fmt(c[:, t - 1], digits=3) for t in shown]])
    header = ["problem", "method", "seeds", "after 10 queries", "after T/2", "after T"]
    lines = [common.markdown_table(header, rows), "",
             "T = " + ", ".join(f"{result['runs'][str(d)]['horizon']} ({d}-d)"
                                for d in result["dims"]),
             "", "seconds per query: " + "; ".join(
                 f"{d}-d: " + ", ".join(f"{k} {v * 1e3:.2f} ms" for k, v in t.items())
                 for d, t in result["seconds_per_query"].items())]
    return "\n".join(lines)


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = result["dims"]
    fig, axes = plt.subplots(2, len(dims), figsize=(4.2 * len(dims), 7), squeeze=False)
    for j, dim in enumerate(dims):
        r = result["runs"][str(dim)]
        for i, (pname, title) in enumerate((("gp", f"held-out GP samples, d={dim}"),
                                            ("test", PROBLEMS[dim]))):
            ax = axes[i, j]
            for method in [m for m in METHODS if m in r[pname]]:
                c = np.asarray(r[pname][method])
                if pname == "test":
                    c = np.log10(np.maximum(c, 1e-6))
                stats = [common.mean_ci(c[:, t]) for t in range(c.shape[1])]
                m = np.array([s[0] for s in stats])
                h = np.nan_to_num(np.array([s[1] for s in stats]))
                ts = np.arange(1, c.shape[1] + 1)
                ax.plot(ts, m, label=method)
                ax.fill_between(ts, m - h, m + h, alpha=0.2)
            ax.set_title(title)
            ax.set_xlabel("function evaluations")
            ax.set_ylabel("best value found" if pname == "gp" else "log10 regret")
            ax.grid(alpha=0.3)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Learned black-box optimizer (Chen et al. 2017): mean ± 95% CI over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
