"""MAML and first-order MAML on 5-way 1-shot and 5-shot digits (classes 0-4 / 5-9 split).

Meta-learned: the initialization of a small CNN (:mod:`.problem`). Second-order MAML and
FOMAML are the same :func:`metaopt.hypergrad.maml` Bilevel (``first_order`` off / on),
differentiated by the exact estimator :func:`metaopt.hypergrad.rmd` and stepped by
:func:`metaopt.outer.outer_trainer` with Adam. Baselines, with the same meta-test episodes:
a random initialization fine-tuned the same way, a network pretrained on classes 0-4 and
fine-tuned (head zeroed, all layers adapted, inner lr picked on meta-train episodes), and
the ANIL-style greedy hypergradient of experiments/greedy_fewshot re-run at these shots.
Reported: meta-test accuracy (mean ± 95% CI over seeds) and seconds per outer step of
MAML vs FOMAML (compiled, compile time excluded).

    .venv/bin/python -m experiments.maml.run [--seeds 5] [--outer-steps N] [--out DIR]
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import hypergrad_common as common
from experiments.greedy_fewshot import problem as anil
from experiments.maml import problem
from metaopt import hypergrad as hg
from metaopt.outer import outer_trainer
from metaopt.tasks.fewshot import FewShotCNN, class_pools

SHOTS, QUERIES, CHANNELS = (1, 5), 5, (8, 16, 16)
INNER_LR, TRAIN_STEPS, TEST_STEPS = 0.1, 3, 6
META_BATCH, OUTER_LR, OUTER_STEPS, TEST_EPISODES = 8, 5e-3, 200, 300
PRETRAIN = {"steps": 600, "batch": 64, "lr": 2e-3}
FINETUNE_LRS = (0.03, 0.1, 0.3)
ANIL_LR, ANIL_CHANNELS = 3e-3, 16
METHODS = ("MAML (2nd order)", "FOMAML (1st order)")


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return out, time.perf_counter() - t0


def evaluator(pools_half, model, kw, keys, steps, opts, lr=INNER_LR):
    """Compiled ``alpha -> mean query accuracy`` over episodes ``keys`` of ``pools_half``."""
    bl = problem.bilevel(pools_half, model, **{**kw, "inner_lr": lr})
    return jax.jit(lambda a: problem.meta_test(bl, model, a, keys, steps), compiler_options=opts)


def run_shots(shots, seeds, cfg, pools, opts) -> dict:
    """Every method at ``shots`` for each seed: accuracies and MAML/FOMAML timings."""
    model = FewShotCNN(cfg["channels"], problem.N_WAY)
    train_pools, test_pools = jnp.asarray(pools[:5]), jnp.asarray(pools[5:])
    kw = {"shots": shots, "queries": QUERIES, "inner_lr": INNER_LR, "steps": TRAIN_STEPS}
    test_keys = jax.random.split(jax.random.key(12345), cfg["test_episodes"])
    evaluate = evaluator(test_pools, model, kw, test_keys, TEST_STEPS, opts)
    unadapted = evaluator(test_pools, model, kw, test_keys, 0, opts)
    seed_keys = [jax.random.split(jax.random.key(s), 4) for s in range(seeds)]
    alpha0 = [model.init(k[0], pools[:1, 0]) for k in seed_keys]
    out = {"random init + fine-tune": {"accuracy": [float(evaluate(a)) for a in alpha0]}}
    for first_order, name in zip((False, True), METHODS, strict=True):
        bl = problem.bilevel(train_pools, model, first_order=first_order, **kw)
        trainer = outer_trainer(hg.rmd(bl, num_tasks=META_BATCH), optax.adam(OUTER_LR))

        def train(k_init, k_run, alpha, trainer=trainer):
            state = trainer.init(k_init, alpha)
            state, metrics = jax.lax.scan(lambda st, kk: trainer.step(kk, st), state,
                                          jax.random.split(k_run, cfg["outer_steps"]))
            return state.theta, metrics["meta_loss"]

        t0 = time.perf_counter()
        compiled = jax.jit(train, compiler_options=opts).lower(
            seed_keys[0][1], seed_keys[0][2], alpha0[0]).compile()
        compile_s = time.perf_counter() - t0
        runs = [_timed(compiled, k[1], k[2], a) for k, a in zip(seed_keys, alpha0, strict=True)]
        out[name] = {"accuracy": [float(evaluate(r[0][0])) for r in runs],
                     "no_adaptation": [float(unadapted(r[0][0])) for r in runs],
                     "seconds_per_step": [r[1] / cfg["outer_steps"] for r in runs],
                     "compile_seconds": compile_s,
                     "meta_loss_curve": np.mean([np.asarray(r[0][1]) for r in runs], 0).tolist()}
        print(f"{shots}-shot {name}: {sum(r[1] for r in runs):.1f} s run, {compile_s:.1f} s "
              f"compile", flush=True)
    out["pretrain + fine-tune"] = _pretrain_baseline(model, pools, kw, seed_keys, cfg, opts)
    if cfg["anil_steps"]:
        out["ANIL greedy γ=0.9"] = _anil(shots, seeds, cfg, train_pools, test_pools, opts)
    return out


def _pretrain_baseline(model, pools, kw, seed_keys, cfg, opts) -> dict:
    """Supervised pretraining on classes 0-4, then the inner loop from a zeroed head; the
    fine-tuning lr is the best of FINETUNE_LRS on meta-train episodes (seed 0's network)."""
    train_pools, test_pools = jnp.asarray(pools[:5]), jnp.asarray(pools[5:])
    pre = jax.jit(lambda k: problem.pretrain(k, model, train_pools, **cfg["pretrain"])[0],
                  compiler_options=opts)
    nets = [problem.zero_head(pre(k[3])) for k in seed_keys]
    val_keys = jax.random.split(jax.random.key(777), 100)
    scores = {lr: float(evaluator(train_pools, model, kw, val_keys, TEST_STEPS, opts, lr)(nets[0]))
              for lr in FINETUNE_LRS}
    best = max(scores, key=scores.get)
    test_keys = jax.random.split(jax.random.key(12345), cfg["test_episodes"])
    evaluate = evaluator(test_pools, model, kw, test_keys, TEST_STEPS, opts, best)
    return {"accuracy": [float(evaluate(n)) for n in nets], "finetune_lr": best,
            "finetune_lr_scores": {str(k): v for k, v in scores.items()}}


def _anil(shots, seeds, cfg, train_pools, test_pools, opts) -> dict:
    """experiments/greedy_fewshot's ANIL problem (CNN backbone = alpha, linear head inner)."""
    train_bl, backbone = anil.fewshot_bilevel(train_pools, problem.N_WAY, shots=shots,
                                              queries=QUERIES, channels=ANIL_CHANNELS)
    test_bl, _ = anil.fewshot_bilevel(test_pools, problem.N_WAY, shots=shots, queries=QUERIES,
                                      channels=ANIL_CHANNELS)
    keys = jax.random.split(jax.random.key(12345), cfg["test_episodes"])
    evaluate = jax.jit(lambda a: jnp.mean(jax.vmap(
        lambda k: anil.episode_accuracy(test_bl, a, k))(keys)), compiler_options=opts)
    trainer = outer_trainer(hg.greedy(train_bl, gamma=0.9, num_tasks=10), optax.adam(ANIL_LR))

    def train(k_init, k_run, alpha):
        state = trainer.init(k_init, alpha)
        state, _ = jax.lax.scan(lambda st, kk: trainer.step(kk, st), state,
                                jax.random.split(k_run, cfg["anil_steps"]))
        return state.theta

    train = jax.jit(train, compiler_options=opts)
    acc = []
    for s in range(seeds):
        k = jax.random.split(jax.random.key(s), 3)
        acc.append(float(evaluate(train(k[1], k[2], backbone.init(
            k[0], jnp.zeros((1, 8, 8, 1)))))))
    return {"accuracy": acc}


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, "experiments/maml/results")
    parser.add_argument("--outer-steps", type=int, default=OUTER_STEPS)
    parser.add_argument("--anil-steps", type=int, default=0,
                        help="also re-run experiments/greedy_fewshot's ANIL greedy at these "
                             "shots for this many outer steps (0: off; its README uses 60)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.outer_steps < 1 or args.anil_steps < 0:
        parser.error("--seeds, --outer-steps: must be positive integers; --anil-steps >= 0")
    smoke = args.smoke
    cfg = {"outer_steps": 3 if smoke else args.outer_steps,
           "test_episodes": 8 if smoke else TEST_EPISODES,
           "channels": (4, 4) if smoke else CHANNELS,
           "pretrain": {**PRETRAIN, "steps": 3} if smoke else PRETRAIN,
           "anil_steps": 0 if smoke else args.anil_steps}
    opts = common.FAST_COMPILE  # LLVM -O0: compiles ~4x faster; MAML and FOMAML alike
    shots_list = (1,) if smoke else SHOTS
    started, pools = time.time(), class_pools()
    runs = {str(k): run_shots(k, args.seeds, cfg, pools, opts) for k in shots_list}
    result = {"shots": list(shots_list), "seeds": args.seeds, "n_way": problem.N_WAY,
              "queries": QUERIES, "inner_lr": INNER_LR, "train_steps": TRAIN_STEPS,
              "test_steps": TEST_STEPS, "meta_batch": META_BATCH, "outer_lr": OUTER_LR,
              **cfg, "runs": runs}
    tables = _tables(result)
    common.save(args.out, "maml", result, tables, started)
    _plot(result, f"{args.out}/maml.png")
    return result


def _tables(result) -> str:
    shots, runs = result["shots"], result["runs"]
    names = [n for n in ("random init + fine-tune", "pretrain + fine-tune", *METHODS,
                         "ANIL greedy γ=0.9") if n in runs[str(shots[0])]]
    header = ["method", *[f"5-way {k}-shot acc %" for k in shots]]
    rows = [[n, *[common.fmt(runs[str(k)][n]["accuracy"], 100) for k in shots]] for n in names]
    rows.append(["MAML init, no adaptation",
                 *[common.fmt(runs[str(k)][METHODS[0]]["no_adaptation"], 100) for k in shots]])
    speed_header = ["shots", "MAML ms / outer step", "FOMAML ms / outer step", "FOMAML speed-up",
                    "accuracy FOMAML − MAML (points)"]
    speed = []
    for k in shots:
        so, fo = runs[str(k)][METHODS[0]], runs[str(k)][METHODS[1]]
        t_so, t_fo = np.asarray(so["seconds_per_step"]), np.asarray(fo["seconds_per_step"])
        speed.append([k, common.fmt(t_so, 1e3), common.fmt(t_fo, 1e3),
                      f"{100 * (1 - t_fo.mean() / t_so.mean()):.0f}% less time",
                      common.fmt(np.subtract(fo["accuracy"], so["accuracy"]), 100)])
    return (common.markdown_table(header, rows) + "\n\n"
            + common.markdown_table(speed_header, speed))


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots, runs = result["shots"], result["runs"]
    names = [n for n in runs[str(shots[0])]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        stats = [common.mean_ci(100 * np.asarray(runs[str(k)][name]["accuracy"])) for k in shots]
        axes[0].bar(np.arange(len(shots)) + i * width, [m for m, _ in stats], width,
                    yerr=[np.nan_to_num(h) for _, h in stats], label=name)
    for name in METHODS:
        for k in shots:
            axes[1].plot(runs[str(k)][name]["meta_loss_curve"], label=f"{name}, {k}-shot")
    axes[0].set_xticks(np.arange(len(shots)) + 0.4 - width / 2, [f"{k}-shot" for k in shots])
    axes[0].set_ylabel("5-way meta-test accuracy % (mean ± 95% CI)")
    axes[0].legend(fontsize=7)
    axes[1].set_yscale("log")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel("meta-train query loss after adaptation (mean over seeds)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
