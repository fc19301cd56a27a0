"""The driver loop: disjoint random streams (defect 1), an honest throughput figure (defect 3),
a donated outer state and a safe crash path after donation (defect 5).

Configurations are learnable SGD on 10-d quadratics: seconds to compile."""

import jax
import numpy as np
import pytest

from metaopt.io.checkpoint import Checkpointer
from metaopt.io.metrics import read_metrics
from metaopt.outer import OuterTrainer
from metaopt.spec import Spec
from metaopt.train import loop
from metaopt.train.config import RunConfig

TINY = RunConfig(task="quadratic", schedule=Spec("constant", {"length": 12}), lopt="sgd",
                 estimator=Spec("pes", {"num_tasks": 2, "unroll_length": 4, "sigma": 0.1,
                                        "meta_loss": "train"}),
                 outer=Spec("adam", {"learning_rate": 1e-2}),
                 run={"outer_steps": 3, "checkpoint_every": 3, "log_every": 1})


class FakeTime:
    """``perf_counter`` advancing one second per call: the loop's windows last 1 s each."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        self.now += 1.0
        return self.now


def _spy_on_keys(monkeypatch):
    """Record the key of the estimator init and of every outer step (as key data)."""
    seen = {"init": [], "step": []}
    real_build = loop.build

    def record(name):
        return lambda k: seen[name].append(np.asarray(k))

    def spy_build(cfg, *args, **kwargs):
        built = real_build(cfg, *args, **kwargs)
        tr = built.trainer

        def init(key, theta):
            jax.debug.callback(record("init"), jax.random.key_data(key))
            return tr.init(key, theta)

        def step(key, state):
            jax.debug.callback(record("step"), jax.random.key_data(key))
            return tr.step(key, state)

        return built._replace(trainer=OuterTrainer(init, step))

    monkeypatch.setattr(loop, "build", spy_build)
    return seen


@pytest.mark.parametrize("name, overrides, per_step", [
    # ES and full backprop unroll whole 12-step episodes: 2 x 2 x 12 inner steps, and
    # 2 x 12 each run twice (full backprop's default per-step remat)
    ("es", ["estimator.name=es", "estimator.num_tasks=2", "estimator.sigma=0.1"], 48),
    ("full_backprop", ["estimator.name=full_backprop", "estimator.num_tasks=2"], 48),
    ("full_backprop", ["estimator.name=full_backprop", "estimator.num_tasks=2",
                       "estimator.remat=none"], 24),
    # two families, each PES: 2 x (2 pairs x 2 halves x 4 steps)
    pytest.param("mixture", ["task.name=mixture", "task.a.name=quadratic",
                             "task.b.name=quadratic", "task.b.dim=5"], 32,
                 marks=pytest.mark.slow),  # default suite < 10 min on 2 cores
])
def test_throughput_counts_every_inner_step_and_keys_are_disjoint(name, overrides, per_step,
                                                                  tmp_path, monkeypatch):
    """Defect 3: the figure was ``num_tasks * truncation`` per outer step (2 x 20 = 40 here),
    whatever the estimator ran. Now it is the estimators' own ``inner_steps`` per second.

    Defect 1: before 0.2 the estimator's init key was ``fold_in(key(seed), 1)``, which was
    also outer step 0's key (PES step 0 drew its noise from the key of the task inits)."""
    monkeypatch.setattr(loop, "time", FakeTime())
    seen = _spy_on_keys(monkeypatch)
    cfg = TINY.with_overrides(overrides)
    loop.train(cfg, tmp_path, progress=False)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["inner_steps"] for r in rows] == [per_step] * 3
    assert [r.get("inner_steps_per_s") for r in rows] == [None, per_step, per_step]
    assert "task_steps_per_s" not in rows[-1]
    assert len(seen["init"]) == 1 and len(seen["step"]) == 3
    assert len({k.tobytes() for k in [*seen["init"], *seen["step"]]}) == 4  # all distinct
    streams = loop.run_keys(cfg.run.seed)
    assert np.array_equal(seen["init"][0], jax.random.key_data(streams.init))
    assert not np.array_equal(jax.random.key_data(streams.theta), seen["init"][0])


def test_the_outer_step_donates_its_input_state():
    """Defect 5: the jitted step donated nothing, so PES held its inner-state halves twice."""
    built = loop.build(TINY)
    keys = loop.run_keys(0)
    state = jax.jit(built.trainer.init)(keys.init, built.lopt.init(keys.theta))
    step_fn, state = loop.compile_step(TINY, built, state)
    leaves = jax.tree.leaves(state)
    new, _ = step_fn(loop.step_key(keys, 0), state)
    assert all(x.is_deleted() for x in leaves)
    assert not any(x.is_deleted() for x in jax.tree.leaves(new))


def test_a_step_failing_after_donation_falls_back_to_the_last_checkpoint(tmp_path, monkeypatch,
                                                                        capsys):
    real = loop.compile_step

    def failing(cfg, built, state):
        step_fn, state = real(cfg, built, state)
        calls = [0]

        def step(key, s):
            out = step_fn(key, s)  # the input state is donated here
            calls[0] += 1
            if calls[0] == 4:
                raise RuntimeError("device lost")
            return out

        return step, state

    cfg = TINY.with_overrides(["run.outer_steps=6", "run.checkpoint_every=2"])
    monkeypatch.setattr(loop, "compile_step", failing)
    with pytest.raises(RuntimeError, match="device lost"):
        loop.train(cfg, tmp_path, progress=False)
    err = capsys.readouterr().err
    assert ("crashed: the state of outer step 3 is lost (it was donated to the step that "
            "failed); checkpoint of outer step 2 saved") in err
    assert Checkpointer(tmp_path / "checkpoints").steps() == [2]
    monkeypatch.setattr(loop, "compile_step", real)
    summary = loop.train(cfg, tmp_path, resume=True, progress=False)
    assert summary["step"] == 6 and summary["reason"] == "finished"
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 7))
