"""A self-referential weight matrix (Irie et al. 2022) meta-trained on 5-way 1-shot and 5-shot
digits episodes (classes 0-4 meta-train, 5-9 meta-test), compared with MAML.

The SRWM reads the support pairs as a sequence and rewrites itself at every step
(:mod:`metaopt.tasks.srwm`); the queries are read from the matrix it left (:mod:`.problem`).
Its slow weights are meta-trained with the exact estimator :func:`metaopt.hypergrad.rmd` and
Adam through :func:`metaopt.outer.outer_trainer`. Meta-test episodes are the ones of
experiments/maml (same keys, same sampler); MAML's accuracies are read from
``experiments/maml/results/maml.json`` when present. ``--variant`` picks one of the model
variants of the README's probe table (default: the final one).

    .venv/bin/python -m experiments.self_referential.run [--seeds 5] [--outer-steps N]
        [--variant NAME] [--out DIR]
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import hypergrad_common as common
from experiments.self_referential import problem
from metaopt import hypergrad as hg
from metaopt.outer import outer_trainer
from metaopt.tasks.fewshot import class_pools

SHOTS, QUERIES, CHANNELS = (1, 5), 5, (8, 16, 16)
META_BATCH, OUTER_LR, OUTER_STEPS, EVAL_EVERY, TEST_EPISODES = 16, 3e-3, 400, 50, 300
_BASE = {"channels": CHANNELS, "d_model": 32}
VARIANTS = {  # the README's probe table, in order; "final" is the full run's model
    "original": problem.Model(**_BASE, heads=4),
    "slots": problem.Model(**_BASE, heads=2, norm="ln", slots=True),
    "routed": problem.Model(**_BASE, heads=2, norm="ln", slots=True, route=3.0),
    "routed-frozen": problem.Model(**_BASE, heads=2, norm="ln", slots=True, route=3.0,
                                   train_embed=False),
    "final": problem.Model(**_BASE, heads=2, norm="ln", slots=True, route=3.0,
                           train_embed=False, pixels=True),
}
MAML_JSON = pathlib.Path("experiments/maml/results/maml.json")
MAML_ROWS = ("MAML (2nd order)", "FOMAML (1st order)", "pretrain + fine-tune")


def run_shots(shots, seeds, cfg, pools, opts) -> dict:
    """Meta-train ``seeds`` SRWMs at ``shots``; meta-test accuracy every ``EVAL_EVERY`` steps."""
    m = cfg["model"]
    kw = {"shots": shots, "queries": QUERIES}
    train_bl, _ = problem.srwm_bilevel(jnp.asarray(pools[:5]), m, **kw)
    test_bl, logits = problem.srwm_bilevel(jnp.asarray(pools[5:]), m, **kw)
    test_keys = jax.random.split(jax.random.key(12345), cfg["test_episodes"])

    def meta_test(alpha, steps=None):
        return jnp.mean(jax.vmap(lambda k: problem.episode_accuracy(
            test_bl, logits, alpha, k, steps))(test_keys))

    evaluate = jax.jit(meta_test, compiler_options=opts)
    unread = jax.jit(lambda a: meta_test(a, 0), compiler_options=opts)
    trainer = outer_trainer(hg.rmd(train_bl, num_tasks=META_BATCH),
                            problem.outer_optimizer(m, OUTER_LR))
    every = min(EVAL_EVERY, cfg["outer_steps"])

    def chunk(state, key):
        state, metrics = jax.lax.scan(lambda st, kk: trainer.step(kk, st), state,
                                      jax.random.split(key, every))
        return state, metrics["meta_loss"]

    chunk = jax.jit(chunk, compiler_options=opts)
    acc, before, curves, acc_curves, secs = [], [], [], [], []
    for s in range(seeds):
        k = jax.random.split(jax.random.key(s), 3)
        t0 = time.perf_counter()
        state = trainer.init(k[1], problem.init_alpha(k[0], m))
        losses, accs = [], []
        for i in range(cfg["outer_steps"] // every):
            state, loss = chunk(state, jax.random.fold_in(k[2], i))
            losses.append(np.asarray(loss))
            accs.append(float(evaluate(state.theta)))
        secs.append(time.perf_counter() - t0)
        acc.append(accs[-1])
        before.append(float(unread(state.theta)))
        curves.append(np.concatenate(losses))
        acc_curves.append(accs)
    print(f"{shots}-shot SRWM: {sum(secs):.1f} s (first seed includes compilation)", flush=True)
    proto = jax.vmap(lambda k: problem.prototype_accuracy(jnp.asarray(pools[5:]), k, shots,
                                                          QUERIES))(test_keys)
    return {"accuracy": acc, "pixel_prototypes": float(jnp.mean(proto)),
            "no_support_read": before, "seconds": secs,
            "meta_loss_curve": np.mean(curves, 0).tolist(),
            "test_accuracy_curve": np.asarray(acc_curves).tolist(), "eval_every": every}


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__, "experiments/self_referential/results")
    parser.add_argument("--outer-steps", type=int, default=OUTER_STEPS)
    parser.add_argument("--variant", default="final", help=f"one of {', '.join(VARIANTS)}")
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.outer_steps < 1:
        parser.error("--seeds and --outer-steps: must be positive integers")
    if args.variant not in VARIANTS:
        parser.error(f"--variant: must be one of {', '.join(VARIANTS)}, got {args.variant!r}")
    if any(k < 1 or k > 100 for k in args.shots):
        parser.error(f"--shots: each must be an integer in [1, 100], got {args.shots}")
    model = VARIANTS[args.variant]
    cfg = {"outer_steps": 3 if args.smoke else args.outer_steps,
           "test_episodes": 8 if args.smoke else TEST_EPISODES,
           "model": (dataclasses.replace(model, channels=(4, 4)) if args.smoke else model)}
    opts = common.FAST_COMPILE if args.smoke else None
    shots_list = (1,) if args.smoke else tuple(args.shots)
    started, pools = time.time(), class_pools()
    runs = {str(k): run_shots(k, args.seeds, cfg, pools, opts) for k in shots_list}
    result = {"shots": list(shots_list), "seeds": args.seeds, "n_way": problem.N_WAY,
              "queries": QUERIES, "meta_batch": META_BATCH, "outer_lr": OUTER_LR,
              "variant": args.variant, "outer_steps": cfg["outer_steps"],
              "test_episodes": cfg["test_episodes"], "model": dataclasses.asdict(cfg["model"]),
              "runs": runs, "maml": _maml_rows(shots_list)}
    header = ["method", *[f"5-way {k}-shot acc %" for k in shots_list]]
    rows = [["SRWM (self-referential)",
             *[common.fmt(runs[str(k)]["accuracy"], 100) for k in shots_list]],
            ["SRWM, best meta-test point of the curve (optimistic)",
             *[common.fmt(np.max(runs[str(k)]["test_accuracy_curve"], 1), 100)
               for k in shots_list]],
            ["SRWM before reading the support set",
             *[common.fmt(runs[str(k)]["no_support_read"], 100) for k in shots_list]]]
    rows += [[f"{name} (experiments/maml)",
              *[common.fmt(result["maml"][str(k)][name], 100) if result["maml"].get(str(k))
                else "-" for k in shots_list]] for name in MAML_ROWS]
    rows.append(["nearest class mean of raw pixels (no learning, same episodes)",
                 *[f"{100 * runs[str(k)]['pixel_prototypes']:.1f}" for k in shots_list]])
    common.save(args.out, "srwm", result, common.markdown_table(header, rows), started)
    _plot(result, f"{args.out}/srwm.png")
    return result


def _maml_rows(shots_list) -> dict:
    """MAML's per-seed accuracies from its results file, when it exists."""
    if not MAML_JSON.exists():
        return {}
    saved = json.loads(MAML_JSON.read_text())
    return {str(k): {n: saved["runs"][str(k)][n]["accuracy"] for n in MAML_ROWS}
            for k in shots_list if str(k) in saved["runs"]}


def _plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shots = result["shots"]
    names = ["SRWM (self-referential)", *[n for n in MAML_ROWS
                                          if result["maml"].get(str(shots[0]))]]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        vals = [result["runs"][str(k)]["accuracy"] if i == 0 else result["maml"][str(k)][name]
                for k in shots]
        stats = [common.mean_ci(100 * np.asarray(v)) for v in vals]
        axes[0].bar(np.arange(len(shots)) + i * width, [m for m, _ in stats], width,
                    yerr=[np.nan_to_num(h) for _, h in stats], label=name)
    for k in shots:
        run = result["runs"][str(k)]
        axes[1].plot(run["meta_loss_curve"], label=f"SRWM {k}-shot")
        curve = 100 * np.asarray(run["test_accuracy_curve"])
        steps = run["eval_every"] * np.arange(1, curve.shape[1] + 1)
        axes[2].errorbar(steps, curve.mean(0), yerr=[np.nan_to_num(common.mean_ci(c)[1])
                                                     for c in curve.T], label=f"SRWM {k}-shot")
    axes[0].set_xticks(np.arange(len(shots)) + 0.4 - width / 2, [f"{k}-shot" for k in shots])
    axes[0].set_ylabel("5-way meta-test accuracy % (mean ± 95% CI)")
    axes[0].legend(fontsize=7)
    axes[1].axhline(np.log(5), color="gray", ls=":", label="chance (ln 5)")
    axes[1].set_xlabel("outer step")
    axes[1].set_ylabel("meta-train query loss (mean over seeds)")
    axes[1].legend(fontsize=7)
    axes[2].axhline(20, color="gray", ls=":", label="chance")
    axes[2].set_xlabel("outer step")
    axes[2].set_ylabel("meta-test accuracy % (classes 5-9)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
