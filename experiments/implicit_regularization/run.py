"""Implicit regularization of a learned optimizer (Metz et al. 2020, "Tasks, stability,
architecture, and compute", sec. 5.3), on f(x, y) = (x - y)^2 / 2.

The minima form the line x = y. Any optimizer whose update treats the two coordinates alike
up to sign (GD, Adam: the gradient is ``(x - y) (1, -1)``) conserves ``x + y`` and converges
to the projection of the start on that line, ``((x0 + y0)/2, (x0 + y0)/2)``, of norm
``|x0 + y0| / sqrt(2)``. A learned optimizer that also reads the parameter values (``norm_mlp``
and ``mlp_small`` do) may move along the valley; Metz et al. report that theirs ends at
solutions of smaller norm, an implicit regularization towards the origin. Starts: ``--starts``
points on the circle of radius 3 (none on the valley). The parameters are one vector [x, y].

    .venv/bin/python -m experiments.implicit_regularization.run [--optimizer NAME] [--steps 1000]
"""

from __future__ import annotations

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import hypergrad_common as common
from metaopt.io.saved import load_optimizer

RADIUS = 3.0


def loss(w: jax.Array) -> jax.Array:
    return 0.5 * jnp.square(w[0] - w[1])


def starts(n: int) -> np.ndarray:
    """``n`` points on the circle of radius 3, at angles avoiding the valley x = y."""
    ang = np.pi / 4 + np.pi / n + 2 * np.pi * np.arange(n) / n
    return RADIUS * np.stack([np.cos(ang), np.sin(ang)], axis=1).astype(np.float32)


def trajectories(tx: optax.GradientTransformation, w0: np.ndarray, steps: int) -> np.ndarray:
    """``[S, steps + 1, 2]`` iterates from every start (one compiled scan, vmapped)."""

    def one(w):
        def step(carry, _):
            w, s = carry
            g = jax.grad(loss)(w)
            u, s = tx.update(g, s, w, loss=loss(w))
            w = optax.apply_updates(w, u)
            return (w, s), w

        _, ws = jax.lax.scan(step, (w, tx.init(w)), None, length=steps)
        return jnp.concatenate([w[None], ws])

    return np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(w0)))


def optimizers(names: list[str], steps: int) -> dict[str, optax.GradientTransformation]:
    out = {"Adam 1e-2": optax.adam(1e-2), "Adam 1e-1": optax.adam(1e-1),
           "GD 0.5": optax.sgd(0.5)}
    for name in names:
        lo, theta = load_optimizer(name)
        out[name] = lo.optimizer(theta, num_steps=steps)
    return out


def plot(result: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["runs"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.6), squeeze=False)
    g = np.linspace(-4, 4, 101)
    xx, yy = np.meshgrid(g, g)
    for ax, name in zip(axes[0], names, strict=True):
        ax.contour(xx, yy, 0.5 * (xx - yy) ** 2, levels=12, colors="0.8", linewidths=0.6)
        for traj in result["runs"][name]["trajectories"]:
            t = np.asarray(traj)
            ax.plot(t[:, 0], t[:, 1], lw=1.0)
            ax.plot(t[-1, 0], t[-1, 1], "k.", ms=5)
        ax.plot(g, g, "k--", lw=0.6)
        ax.set_title(f"{name}\nmean final norm {result['runs'][name]['mean_final_norm']:.2f}",
                     fontsize=9)
        ax.set_xlim(-4, 4)
        ax.set_ylim(-4, 4)
        ax.set_aspect("equal")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> dict:
    p = common.base_parser(__doc__, "experiments/implicit_regularization/results")
    p.add_argument("--optimizer", action="append", default=None,
                   help="learned optimizers (pretrained names, run dirs or files); repeatable")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--starts", type=int, default=8)
    args = p.parse_args(argv)
    steps = 50 if args.smoke else args.steps
    names = args.optimizer or ["norm_mlp_general", "mlp_small_digits"]
    w0 = starts(args.starts)
    t0 = time.time()
    runs = {}
    for name, tx in optimizers(names, steps).items():
        traj = trajectories(tx, w0, steps)
        final = traj[:, -1]
        runs[name] = {
            "final": final.tolist(),
            "final_norm": np.linalg.norm(final, axis=1).tolist(),
            "mean_final_norm": float(np.mean(np.linalg.norm(final, axis=1))),
            "final_loss": [float(loss(jnp.asarray(w))) for w in final],
            "sum_drift": (final.sum(1) - w0.sum(1)).tolist(),
            "trajectories": traj[:, :: max(1, steps // 200)].tolist(),
        }
    proj = np.abs(w0.sum(1)) / np.sqrt(2)
    result = {"steps": steps, "starts": w0.tolist(), "projection_norm": proj.tolist(),
              "mean_projection_norm": float(proj.mean()), "runs": runs}
    rows = [[name, f"{r['mean_final_norm']:.3f}", f"{np.max(r['final_loss']):.2e}",
             f"{np.mean(np.abs(r['sum_drift'])):.3f}"] for name, r in runs.items()]
    table = common.markdown_table(
        ["optimizer", "mean final norm", "max final loss", "mean |change of x + y|"], rows)
    table += f"\n\nProjection of the starts on the valley (GD's limit): mean norm " \
             f"{proj.mean():.3f}.\n"
    common.save(args.out, "implicit_regularization", result, table, t0)
    plot(result, pathlib.Path(args.out) / "implicit_regularization.png")
    return result


if __name__ == "__main__":
    main()
