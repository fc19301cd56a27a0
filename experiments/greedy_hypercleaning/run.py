"""Data hyper-cleaning on digits: per-example weights as alpha, tuned online with T = 10.

Training set: the first 500 images of the digits train split with a fraction ``rate`` of labels
replaced by a random other class (rates 0.3 and 0.5); validation: the clean valid split (360);
test: the test split (360). Inner model: the digits MLP 64-32-10, minibatch SGD (lr 0.3,
batch 100) on ``sum_i sigmoid(alpha_i) l_i / B`` (``tasks.classification_task`` with
``hparams = {"example_logits": alpha}``), episodes of 200 steps. Outer: Adam (lr 0.1) on alpha
from 0, one hypergradient every T = 10 inner steps (online: the inner run and greedy's
accumulator continue across truncations), 400 outer steps (20 episodes).

Reported: test accuracy of a fresh 200-step training run with the final weights (mean of 3
retrainings), per estimator and for no tuning (alpha = 0) and the oracle (corrupted examples
weighted 0); the AUC of -alpha for flagging the corrupted labels; VJPs per hypergradient.

    .venv/bin/python -m experiments.greedy_hypercleaning.run [--seeds 5] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.stats import rankdata

from experiments import hypergrad_common as common
from metaopt import hypergrad as hg
from metaopt import tasks
from metaopt.inner import inner_problem, truncation
from metaopt.outer import outer_trainer
from metaopt.tasks.data.arrays import ArrayDataset
from metaopt.tasks.models import MLP

RATES = (0.3, 0.5)
N_TRAIN, HORIZON, T, LR, BATCH, OUTER_LR, RETRAIN = 500, 200, 10, 0.3, 100, 0.1, 3
ESTIMATORS = {
    "FO": lambda ip: hg.fo(ip, unroll_length=T),
    "T1-T2": lambda ip: hg.t1t2(ip, unroll_length=T),
    "IFT (K=10)": lambda ip: hg.ift(ip, num_terms=10, unroll_length=T),
    "greedy γ=0.9": lambda ip: hg.greedy(ip, gamma=0.9, unroll_length=T),
    "greedy γ=0.99": lambda ip: hg.greedy(ip, gamma=0.99, unroll_length=T),
    "RMD in truncation": lambda ip: hg.rmd(ip, unroll_length=T),
}


def corrupt(key, labels, rate):
    """Replace a fraction ``rate`` of labels by a uniformly random *other* class."""
    k_flip, k_shift = jax.random.split(key)
    flip = jax.random.uniform(k_flip, labels.shape) < rate
    other = (labels + jax.random.randint(k_shift, labels.shape, 1, 10)) % 10
    return jnp.where(flip, other, labels), flip


def problem(noisy_labels, episode: int = HORIZON):
    """(task, inner problem with episodes of ``episode`` steps) training on the noisy labels;
    traceable in ``noisy_labels``."""
    digits = tasks.load_digits()
    splits = {s: tuple(map(jnp.asarray, digits.splits[s])) for s in ("valid", "test")}
    splits["train"] = (jnp.asarray(digits.splits["train"][0][:N_TRAIN]), noisy_labels)
    data = ArrayDataset(splits=splits, num_classes=10, name="digits_noisy")
    task = tasks.classification_task(MLP(hidden=(32,), out=10), data, BATCH, name="hc")
    ip = inner_problem(task, optax.sgd(LR), schedule=truncation.constant(episode),
                       hparams_fn=lambda a: {"example_logits": a})
    return task, ip, splits["test"]


def test_accuracy(noisy_labels, alpha, key):
    """Mean test accuracy of ``RETRAIN`` fresh trainings of ``HORIZON`` steps with ``alpha``
    (episodes one step longer, so that the last step does not reset the task)."""
    task, ip, (x, y) = problem(noisy_labels, episode=HORIZON + 1)
    full = {"x": x, "y": y, "idx": jnp.arange(y.shape[0]), "train": jnp.asarray(False)}

    def one(k):
        state = ip.init(k, alpha)
        state, _ = ip.unroll(jax.random.fold_in(k, 1), alpha, state, HORIZON)
        return task.metrics(state.params, full)["accuracy"]

    return jnp.mean(jax.vmap(one)(jax.random.split(key, RETRAIN)))


def meta_train(name, noisy_labels, key, outer_steps):
    _, ip, _ = problem(noisy_labels)
    est = ESTIMATORS[name](ip)
    trainer = outer_trainer(est, optax.adam(OUTER_LR))
    k_init, k_run = jax.random.split(key)
    state = trainer.init(k_init, jnp.zeros((N_TRAIN,)))
    state, metrics = jax.lax.scan(lambda s, k: trainer.step(k, s), state,
                                  jax.random.split(k_run, outer_steps))
    return state.theta, metrics["meta_loss"], metrics["vjps"][-1]


def auc(scores, positives):
    """Area under the ROC curve of ``scores`` for the boolean ``positives`` (Mann-Whitney U,
    ties counted as 1/2)."""
    s, p = np.asarray(scores, np.float64), np.asarray(positives, bool)
    ranks = rankdata(s)
    n_pos, n_neg = p.sum(), (~p).sum()
    return float((ranks[p].sum() - n_pos * (n_pos + 1) / 2) / max(n_pos * n_neg, 1))


def main(argv=None) -> dict:
    args = common.base_parser(__doc__, "experiments/greedy_hypercleaning/results").parse_args(argv)
    outer_steps = 3 if args.smoke else 400
    opts = common.FAST_COMPILE if args.smoke else None
    names = ["greedy γ=0.9"] if args.smoke else list(ESTIMATORS)
    started = time.time()
    clean = jnp.asarray(tasks.load_digits().splits["train"][1][:N_TRAIN])
    combos = [(r, s) for r in RATES for s in range(args.seeds)]
    keys = jnp.stack([jax.random.key(1000 * int(10 * r) + s) for r, s in combos])
    labels, flips = jax.vmap(corrupt, (0, None, 0))(
        jax.vmap(lambda k: jax.random.fold_in(k, 0))(keys), clean,
        jnp.asarray([r for r, _ in combos]))
    eval_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
    evaluate = jax.jit(jax.vmap(test_accuracy), compiler_options=opts)
    alphas, rows = {}, {}
    rows["no tuning"] = evaluate(labels, jnp.zeros((len(combos), N_TRAIN)), eval_keys)
    if not args.smoke:
        rows["oracle (clean only)"] = evaluate(labels, jnp.where(flips, -30.0, 30.0), eval_keys)
    vjps, curves = {}, {}
    for name in names:
        t0 = time.time()
        run = jax.jit(jax.vmap(lambda y, k, n=name: meta_train(n, y, k, outer_steps)),
                      compiler_options=opts)
        alpha, curve, cost = run(labels, jax.vmap(lambda k: jax.random.fold_in(k, 1))(keys))
        alphas[name], vjps[name], curves[name] = alpha, float(cost[0]), np.asarray(curve)
        rows[name] = evaluate(labels, alpha, eval_keys)
        print(f"{name}: {time.time() - t0:.1f} s", flush=True)
    result = {"rates": list(RATES), "seeds": args.seeds, "outer_steps": outer_steps,
              "config": {"n_train": N_TRAIN, "horizon": HORIZON, "T": T, "lr": LR,
                         "batch": BATCH, "outer_lr": OUTER_LR, "retrain": RETRAIN},
              "vjps": vjps, "runs": {}}
    for i, (r, s) in enumerate(combos):
        run = result["runs"].setdefault(str(r), {}).setdefault(str(s), {})
        for name, acc in rows.items():
            run[name] = {"test_accuracy": float(acc[i])}
            if name in alphas:
                a, f = np.asarray(alphas[name][i]), np.asarray(flips[i])
                run[name].update(auc=auc(-a, f), weight_corrupted=float(np.mean(_sig(a)[f])),
                                 weight_clean=float(np.mean(_sig(a)[~f])),
                                 meta_loss_last=float(curves[name][i, -20:].mean()))
    table = _table(result, list(rows), vjps)
    common.save(args.out, "hypercleaning", result, table, started)
    _plot(result, list(rows), f"{args.out}/hypercleaning.png")
    return result


def _sig(a):
    return 1.0 / (1.0 + np.exp(-a))


def _table(result, names, vjps):
    header = ["method", "VJPs / hypergrad"]
    for r in result["rates"]:
        header += [f"test acc % (noise {r})", f"AUC corrupted (noise {r})"]
    rows = []
    for name in names:
        row = [name, f"{vjps[name]:.0f}" if name in vjps else "-"]
        for r in result["rates"]:
            runs = result["runs"][str(r)].values()
            row.append(common.fmt([x[name]["test_accuracy"] for x in runs], 100, 1))
            row.append(common.fmt([x[name]["auc"] for x in runs], 1, 3) if name in vjps else "-")
        rows.append(row)
    return common.markdown_table(header, rows)


def _plot(result, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["rates"]), figsize=(10, 4), sharey=True)
    for ax, r in zip(np.atleast_1d(axes), result["rates"], strict=True):
        runs = result["runs"][str(r)].values()
        stats = [common.mean_ci([100 * x[n]["test_accuracy"] for x in runs]) for n in names]
        ax.barh(range(len(names)), [m for m, _ in stats],
                xerr=[np.nan_to_num(h) for _, h in stats], color="tab:blue", alpha=0.7)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_xlim(min(m for m, _ in stats) - 5, 100)
        ax.set_title(f"label noise {r}")
        ax.set_xlabel("test accuracy % (mean ± 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
