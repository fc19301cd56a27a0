"""Few-shot meta-learning on digits, n-way 10-shot (n = 3, 4, 5), classes split in halves.

A CNN backbone (3 conv layers, 16 channels: the seed's 32 would not fit the 20-minute budget
on 2 CPU cores) is alpha; a linear head is trained in the inner loop with SGD lr 0.1, momentum
0.9, T = 10 steps on the support set (:mod:`.problem`). Outer: Adam (lr 3e-3), meta-batch 10
episodes, ``--outer-steps`` (60) steps, each estimator from the same initial backbone and with
the same episodes per seed. Reported: meta-test accuracy (classes
5-9; mean over 300 fixed episodes, 10 queries per class) and VJPs through Phi per hypergradient,
for FO, T1-T2, IFT (K = 10), greedy (gamma 0.9, 0.99) and, as references, exact RMD and the
untrained backbone.

    .venv/bin/python -m experiments.greedy_fewshot.run [--seeds 5] [--outer-steps 60] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import hypergrad_common as common
from experiments.greedy_fewshot.problem import class_pools, episode_accuracy, fewshot_bilevel
from metaopt import hypergrad as hg
from metaopt.outer import outer_trainer

WAYS, META_BATCH, OUTER_LR, TEST_EPISODES, CHANNELS = (3, 4, 5), 10, 3e-3, 300, 16
ESTIMATORS = {
    "FO": lambda bl: hg.fo(bl, num_tasks=META_BATCH),
    "T1-T2": lambda bl: hg.t1t2(bl, num_tasks=META_BATCH),
    "IFT (K=10)": lambda bl: hg.ift(bl, num_terms=10, num_tasks=META_BATCH),
    "greedy γ=0.9": lambda bl: hg.greedy(bl, gamma=0.9, num_tasks=META_BATCH),
    "greedy γ=0.99": lambda bl: hg.greedy(bl, gamma=0.99, num_tasks=META_BATCH),
    "RMD (exact)": lambda bl: hg.rmd(bl, num_tasks=META_BATCH),
}


def run_ways(n_way, names, seeds, outer_steps, pools, opts, test_episodes) -> dict:
    """Meta-train with each estimator and seed; meta-test accuracies (and untrained ones).

    Seeds run one after the other through one compiled program per estimator (vmapping them
    would batch the backbone's kernels, which XLA's CPU convolution runs as slow grouped
    convolutions); the meta-test program is compiled once per ``n_way`` and shared.
    """
    train_bl, backbone = fewshot_bilevel(jnp.asarray(pools[:5]), n_way, channels=CHANNELS)
    test_bl, _ = fewshot_bilevel(jnp.asarray(pools[5:]), n_way, channels=CHANNELS)
    test_keys = jax.random.split(jax.random.key(12345), test_episodes)
    meta_test = jax.jit(
        lambda a: jnp.mean(jax.vmap(lambda k: episode_accuracy(test_bl, a, k))(test_keys)),
        compiler_options=opts)
    seed_keys = [jax.random.split(jax.random.key(s), 3) for s in range(seeds)]
    alpha0 = [backbone.init(k[0], jnp.zeros((1, 8, 8, 1))) for k in seed_keys]
    out = {"untrained": [float(meta_test(a)) for a in alpha0]}
    for name in names:
        t0 = time.time()
        trainer = outer_trainer(ESTIMATORS[name](train_bl), optax.adam(OUTER_LR))

        def train(k_init, k_run, alpha, trainer=trainer):
            state = trainer.init(k_init, alpha)
            state, metrics = jax.lax.scan(lambda st, kk: trainer.step(kk, st), state,
                                          jax.random.split(k_run, outer_steps))
            return state.theta, metrics["meta_loss"], metrics["vjps"][-1]

        train = jax.jit(train, compiler_options=opts)
        results = [train(k[1], k[2], a) for k, a in zip(seed_keys, alpha0, strict=True)]
        out[name] = {"accuracy": [float(meta_test(r[0])) for r in results],
                     "meta_loss_curve": np.mean([np.asarray(r[1]) for r in results], 0).tolist(),
                     "vjps": float(results[0][2]) / META_BATCH}
        print(f"{n_way}-way {name}: {time.time() - t0:.1f} s", flush=True)
    return out


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, "experiments/greedy_fewshot/results")
    parser.add_argument("--outer-steps", type=int, default=60)
    args = parser.parse_args(argv)
    outer_steps = 2 if args.smoke else args.outer_steps
    opts = common.FAST_COMPILE if args.smoke else None
    ways = (3,) if args.smoke else WAYS
    test_episodes = 8 if args.smoke else TEST_EPISODES
    names = ["greedy γ=0.9"] if args.smoke else list(ESTIMATORS)
    started, pools = time.time(), class_pools()
    runs, before = {}, {}
    for n_way in ways:
        runs[str(n_way)] = run_ways(n_way, names, args.seeds, outer_steps, pools, opts,
                                    test_episodes)
        before[str(n_way)] = runs[str(n_way)].pop("untrained")
    result = {"ways": list(ways), "seeds": args.seeds, "outer_steps": outer_steps,
              "meta_batch": META_BATCH, "outer_lr": OUTER_LR, "test_episodes": test_episodes,
              "channels": CHANNELS, "estimators": names, "runs": runs, "untrained": before}
    header = ["method", "VJPs / hypergrad", *[f"{n}-way 10-shot acc %" for n in ways]]
    rows = [["untrained backbone", "-", *[common.fmt(before[str(n)], 100) for n in ways]]]
    rows += [[name, f"{runs[str(ways[0])][name]['vjps']:.0f}",
              *[common.fmt(runs[str(n)][name]["accuracy"], 100) for n in ways]]
             for name in names]
    common.save(args.out, "fewshot", result, common.markdown_table(header, rows), started)
    _plot(result, f"{args.out}/fewshot.png")
    return result


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ways, names = result["ways"], result["estimators"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        stats = [common.mean_ci(100 * np.asarray(result["runs"][str(n)][name]["accuracy"]))
                 for n in ways]
        axes[0].bar(np.arange(len(ways)) + i * width, [m for m, _ in stats], width,
                    yerr=[np.nan_to_num(h) for _, h in stats], label=name)
        axes[1].plot(result["runs"][str(ways[-1])][name]["meta_loss_curve"], label=name)
    axes[0].set_xticks(np.arange(len(ways)) + 0.4 - width / 2, [f"{n}-way" for n in ways])
    axes[0].set_ylabel("meta-test accuracy % (mean ± 95% CI)")
    lo = min(100 * min(result["runs"][str(n)][m]["accuracy"]) for n in ways for m in names)
    axes[0].set_ylim(max(0, lo - 5), 100)
    axes[0].legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel(f"meta-train query loss ({ways[-1]}-way, mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
