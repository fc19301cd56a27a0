"""Markdown tables and the figure of the short-horizon-bias experiment (from its result dict)."""

from __future__ import annotations

import numpy as np

from experiments import hypergrad_common as common


def _g(x: float) -> str:
    return f"{x:.3g}"


def _ci(values, digits: int = 4) -> str:
    values = np.asarray(values, np.float64)
    if values.size == 1:
        return f"{values[0]:.{digits}g}"
    m, h = common.mean_ci(values)
    return f"{m:.{digits}g} ± {h:.2g}"


def table_a(a: dict) -> str:
    rows = []
    for noise, res in a.items():
        hs = sorted(int(h) for h in res["optimal"])
        long, short = max(hs), min(hs)
        for h in hs:
            o = res["optimal"][h]
            g_loss = res["greedy"]["loss_at"][h]
            rows.append([noise, h, _g(o["loss_at_h"]), _g(g_loss), f"{g_loss / o['loss_at_h']:.2f}",
                         _g(o["lr_at"][short]), _g(res["greedy"]["lr_at"][short]),
                         _g(o["lr_at"][h]), _g(o["loss_at_long_continued"])])
        rows.append([noise, f"greedy → {long}", "", _g(res["greedy"]["loss_at"][long]), "", "",
                     "", _g(res["greedy"]["lr_at"][long]), _g(res["greedy"]["loss_at"][long])])
    return common.markdown_table(
        ["noise", "horizon T", "optimal: excess loss at T", "greedy: excess loss at T",
         "greedy / optimal", f"optimal: lr at step {short}", f"greedy: lr at step {short}",
         "lr at step T", f"loss at {long} (continued at last lr)"], rows)


def table_b(b: dict, digits: bool) -> str:
    hs = sorted(int(h) for h in b)
    long = max(hs)
    rows = []
    for h in hs:
        r = b[h]
        final = _ci(r["loss_at_long"]) if digits else _g(r["loss_at_long"])
        rows.append([h, _g(r["a0"]), _g(r["K"]), f"{r['beta']:.2f}", _g(r["eff_lr_end"]),
                     _g(r["eff_lr_at"][hs[0]]), _g(r["eff_lr_at"][long]), final])
    return common.markdown_table(
        ["tuned at horizon", "a_0", "K", "beta", "eff. lr at end of its horizon",
         f"eff. lr at step {hs[0]}", f"eff. lr at step {long}",
         f"{'train loss (full set)' if digits else 'excess loss'} at {long}"], rows)


def table_c(c: dict, start, optimum=None, digits: bool = False) -> str:
    from . import nqm_part as npt

    rows = [["start", "", "", *_describe(npt, start["theta"], start["h"]), start["loss"]]]
    if optimum is not None:
        rows.append(["exact hypergradient, 100 Adam steps (b)", "", "", _g(optimum["a0"]),
                     _g(optimum["K"]), f"{optimum['beta']:.2f}", _g(optimum["eff_lr_end"]),
                     _g(optimum["loss_at_h"])])
    for name, r in c.items():
        th = r["thetas"][0] if len(r["thetas"]) == 1 else None
        desc = _describe(npt, th, start["h"]) if th else _describe_many(npt, r["thetas"],
                                                                          start["h"])
        final = _ci(r["loss_at_h"]) if digits else _ci([cv[-1] for cv in r["curve"]])
        rows.append([name, r["outer_steps"], r["outer_steps"] * r["inner_steps_per_outer"],
                     *desc, final])
    return common.markdown_table(
        ["estimator", "outer steps", "inner steps", "a_0", "K", "beta",
         f"eff. lr at step {start['h']}", f"{'train loss' if digits else 'excess loss'} at "
         f"{start['h']}"], rows)


def _describe(npt, theta, h):
    import jax.numpy as jnp

    d = npt.describe({k: jnp.float32(v) for k, v in theta.items()}, h)
    return [_g(d["a0"]), _g(d["K"]), f"{d['beta']:.2f}", _g(d["eff_lr_end"])]


def _describe_many(npt, thetas, h):
    import jax.numpy as jnp

    ds = [npt.describe({k: jnp.float32(v) for k, v in t.items()}, h) for t in thetas]
    return [_ci([d[k] for d in ds], 3) for k in ("a0", "K")] + [
        _ci([d["beta"] for d in ds], 3), _ci([d["eff_lr_end"] for d in ds], 3)]


def tables(result: dict) -> str:
    from . import run

    h, hd = result["config"]["c_horizon"], result["config"]["dc_horizon"]
    start = {"theta": {k: float(v) for k, v in run.theta_init().items()}, "h": h,
             "loss": _g(result["c_nqm_start"])}
    dstart = {"theta": {k: float(v) for k, v in run.digits_theta_init().items()}, "h": hd,
              "loss": _ci(result["c_digits_start"])}
    return "\n\n".join([
        "### (a) Exact NQM, SGD: horizon-optimal vs greedy schedules", table_a(result["a"]),
        "### (b) Parametric schedule, momentum 0.9, exact NQM", table_b(result["b_nqm"], False),
        "### (b) Parametric schedule, momentum 0.9, digits MLP",
        table_b(result["b_digits"], True),
        f"### (c) Estimators at equal compute, exact NQM (horizon {h})",
        table_c(result["c_nqm"], start, result["c_nqm_optimum"]),
        f"### (c) Estimators at equal compute, digits MLP (horizon {hd})",
        table_c(result["c_digits"], dstart, digits=True),
    ])


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import nqm_part as npt

    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    for col, noise in enumerate(("noisy", "noiseless")):
        res = result["a"][noise]
        pts = np.asarray(res["points"])
        ax_lr, ax_loss = axes[0, col], axes[1, col]
        for h, o in sorted(res["optimal"].items(), key=lambda kv: int(kv[0])):
            n = len(o["lrs"])
            ax_lr.plot(pts[:n] + 1, o["lrs"], label=f"optimal, T={h}")
            ax_loss.plot(pts[:len(o["losses"])] + 1, o["losses"], label=f"optimal, T={h}")
        ax_lr.plot(pts[:len(res["greedy"]["lrs"])] + 1, res["greedy"]["lrs"], "k--",
                   label="greedy")
        ax_loss.plot(pts + 1, res["greedy"]["losses"], "k--", label="greedy")
        for ax, what in ((ax_lr, "learning rate"), (ax_loss, "excess loss")):
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xlabel("step + 1")
            ax.set_ylabel(what)
            ax.set_title(f"(a) exact NQM, SGD, {noise}: {what}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    ax = axes[0, 2]
    import jax.numpy as jnp

    from metaopt.lopt import schedules

    for part, style in (("b_nqm", "-"), ("b_digits", ":")):
        hs = sorted(int(h) for h in result[part])
        long = max(hs)
        for h in hs:
            th = {k: jnp.float32(v) for k, v in result[part][h]["theta"].items()}
            r = np.asarray(schedules.rates(th, npt.SCHEDULE, long)) / (1 - npt.MOMENTUM)
            ax.plot(np.arange(1, long + 1), r, style,
                    label=f"{'NQM' if part == 'b_nqm' else 'digits'}, tuned at {h}")
            ax.axvline(h, color="grey", lw=0.5)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("effective lr a_k / (1 - 0.9)")
    ax.set_title("(b) a_0 (1 + k/K)^-beta tuned at each horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1, 2]
    for name, r in result["c_nqm"].items():
        curve = np.asarray(r["curve"])  # [seeds, chunks + 1]
        x = np.linspace(0, r["outer_steps"] * r["inner_steps_per_outer"], curve.shape[1])
        ax.plot(x, curve.mean(0), label=name)
    ax.axhline(result["c_nqm_optimum"]["loss_at_h"], color="k", ls="--",
               label="tuned by the exact hypergradient (b)")
    ax.set_yscale("log")
    ax.set_xlabel("inner steps spent (per task slot)")
    ax.set_ylabel(f"exact excess loss at step {result['config']['c_horizon']}")
    ax.set_title("(c) exact NQM: estimators at equal compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
