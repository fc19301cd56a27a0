"""The nested run config: one spec per concept, dotted overrides typed through the registries,
name switches that reset a section, mixtures, presets that mean what the flat ones meant,
and validation inside the Python entry points."""

import dataclasses
import json

import pytest

from metaopt.config import Mixture
from metaopt.spec import Spec, SpecError
from metaopt.train import build, presets
from metaopt.train.config import RunConfig, diff
from metaopt.train.loop import train

SMOKE = presets.get("smoke")


def test_dotted_overrides_are_parsed_by_each_options_type():
    cfg = SMOKE.with_overrides(["lopt.hidden=64,64", "estimator.sigma=0.5",
                                "outer.learning_rate=1e-3", "run.outer_steps=100",
                                "inner.feed_valid_loss=true", "run.clip_norm=0"])
    assert cfg.lopt.options["hidden"] == (64, 64)
    assert cfg.estimator.options["sigma"] == 0.5
    assert cfg.outer.options["learning_rate"] == 1e-3
    assert cfg.run.outer_steps == 100 and cfg.run.clip_norm == 0.0
    assert cfg.inner.feed_valid_loss is True
    assert SMOKE.lopt.options["hidden"] == (4,)  # the preset itself is untouched


@pytest.mark.parametrize("order", [("lopt.name=mlp", "lopt.stats_stride=2"),
                                   ("lopt.stats_stride=2", "lopt.name=mlp")])
def test_switching_a_name_resets_that_sections_options_unless_given(order):
    base = SMOKE.with_overrides(["lopt.hidden=8", "lopt.stats_stride=5"])
    cfg = base.with_overrides(list(order))
    assert cfg.lopt.name == "mlp"
    assert cfg.lopt.options["hidden"] == (32, 32)  # mlp's default, not the 8 given before
    assert cfg.lopt.options["stats_stride"] == 2  # given with the switch, in either order
    again = base.with_overrides(["lopt=mlp_small"])  # the short form, same entry: reset too
    assert again.lopt == Spec("mlp_small", SMOKE.lopt.options)
    est = SMOKE.with_overrides(["estimator.name=tbptt"]).estimator
    assert est.name == "tbptt" and est.options["meta_loss"] == "valid"  # tbptt's default
    assert est.options["num_tasks"] == 8 and est.options["unroll_length"] == 20  # run fallbacks


def test_mixture_members_from_the_command_line_and_json_round_trip():
    cfg = SMOKE.with_overrides(["task.name=mixture", "task.quad.name=quadratic",
                                "task.digits.name=digits_mlp", "task.digits.hidden=8",
                                "task.quad.weight=0.25", "task.quad.dim=5"])
    assert isinstance(cfg.task, Mixture)
    assert [(m.member, m.weight, m.task.name) for m in cfg.task.members] == [
        ("quad", 0.25, "quadratic"), ("digits", 1.0, "digits_mlp")]
    assert cfg.task.members[0].task.options["dim"] == 5
    assert cfg.task.members[1].task.options["hidden"] == (8,)
    again = RunConfig.from_json(json.loads(json.dumps(cfg.to_json())))
    assert again == cfg and diff(again, cfg) == []
    dropped = cfg.with_overrides(["task.quad=none"])
    assert [m.member for m in dropped.task.members] == ["digits"]
    built = build.build(cfg)
    assert built.estimator.name == "mixture(quad,digits)"
    assert sorted(built.problems) == ["digits", "quad"]


@pytest.mark.parametrize("overrides, key, needle", [
    (["task.a.name=quadratic"], "task.a.name", "not a mixture"),
    (["task.name=mixture"], "task", "needs at least one member"),
    (["task.name=mixture", "task.a.hidden=3"], "task.a", "no mixture member 'a'"),
    (["task.name=mixture", "task.a.name=quadratic", "task.a.weight=0"], "task.a.weight",
     "finite number > 0"),
    (["task.name=mixture", "task.name.name=quadratic"], "task.name", "unique identifiers"),
    (["estimator.axis_name=x"], "estimator.axis_name", "set by the run"),
    (["outer_steps=5"], "outer_steps", "did you mean run.outer_steps"),
    (["estimator.sigma=nan"], "estimator.sigma", "finite"),
])
def test_bad_overrides_name_the_dotted_key(overrides, key, needle):
    with pytest.raises(SpecError, match=needle) as err:
        SMOKE.with_overrides(overrides)
    assert err.value.key == key


# The pre-0.2 flat presets (metaopt/train/presets.py before 0.2), and how the old build read a
# flat config: the mapping below is the old build's, so the nested presets must equal it.
FLAT_DEFAULTS = dict(task="digits_mlp", hidden=(32,), batch_size=128, episode_length=200,
                     min_episode_length=20, schedule="constant", meta_loss="train",
                     lopt="mlp_small", estimator="pes", num_tasks=8, truncation=20, sigma=0.01,
                     outer_optimizer="adam", outer_lr=3e-3, clip_norm=1.0, self_warmup_steps=0,
                     outer_steps=200, seed=0, checkpoint_every=50, keep=3, log_every=10,
                     devices=1)
FLAT = {
    "quickstart": dict(task="mlp_family", min_episode_length=50, schedule="log_uniform",
                       outer_steps=300),
    "pes_digits": dict(episode_length=1000, lopt="mlp", num_tasks=16, truncation=50,
                       outer_lr=1e-3, outer_steps=500),
    "tbptt_digits": dict(episode_length=1000, lopt="mlp", estimator="tbptt", num_tasks=16,
                         truncation=50, outer_lr=1e-3, outer_steps=500),
    "self_train": dict(task="mlp_family", min_episode_length=50, schedule="log_uniform",
                       outer_optimizer="self", self_warmup_steps=100, outer_steps=300),
    "smoke": dict(hidden=(16,), batch_size=32, episode_length=30, min_episode_length=10,
                  num_tasks=4, truncation=10, outer_steps=6, checkpoint_every=2, log_every=1),
}


def _from_flat(f):
    task = Spec(f["task"], {"hidden": f["hidden"], "batch_size": f["batch_size"]}) \
        if f["task"] != "quadratic" else Spec("quadratic", {"dim": 10})
    schedule = Spec("log_uniform", {"min_length": f["min_episode_length"],
                                    "max_length": f["episode_length"]}) \
        if f["schedule"] == "log_uniform" else Spec("constant", {"length": f["episode_length"]})
    est = {"num_tasks": f["num_tasks"], "meta_loss": f["meta_loss"],
           "unroll_length": f["truncation"]}
    if f["estimator"] in ("pes", "truncated_es", "es"):
        est["sigma"] = f["sigma"]
    outer = Spec("self", {"warmup_steps": f["self_warmup_steps"],
                          "warmup_learning_rate": f["outer_lr"]}) \
        if f["outer_optimizer"] == "self" else Spec(f["outer_optimizer"],
                                                    {"learning_rate": f["outer_lr"]})
    run = {k: f[k] for k in ("outer_steps", "seed", "clip_norm", "checkpoint_every", "keep",
                             "log_every", "devices")}
    return RunConfig(task=task, schedule=schedule, lopt=Spec(f["lopt"]),
                     estimator=Spec(f["estimator"], est), outer=outer, run=run,
                     inner={"feed_valid_loss": f["meta_loss"] in ("valid", "last")})


@pytest.mark.parametrize("name", sorted(FLAT))
def test_presets_mean_what_the_flat_presets_meant(name):
    assert presets.get(name) == _from_flat({**FLAT_DEFAULTS, **FLAT[name]})
    again = RunConfig.from_json(json.loads(json.dumps(presets.get(name).to_json())))
    assert again == presets.get(name)


def test_validation_runs_inside_the_python_entry_points(tmp_path):
    with pytest.raises(SpecError, match="lopt.width: unknown option"):
        RunConfig(task="quadratic", schedule=Spec("constant", {"length": 5}),
                  lopt=Spec("mlp", {"width": 3}), estimator="fo", outer="adam")
    with pytest.raises(SpecError, match="outer.learning_rate: expected a finite number"):
        dataclasses.replace(SMOKE, outer=Spec("adam", {"learning_rate": float("inf")}))
    bad = SMOKE.with_overrides(["estimator.sigma=-1"])  # type-correct, value impossible
    with pytest.raises(SpecError, match="estimator.sigma: must be a positive number"):
        train(bad, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before anything was written
    with pytest.raises(SpecError, match=r"estimator.unroll_length: must be <= the longest "
                                        r"episode of the schedule \(30\)"):
        build.validate(SMOKE.with_overrides(["estimator.unroll_length=31"]), device_count=1)
    with pytest.raises(SpecError, match="outer.source: .*neither a run directory"):
        build.validate(SMOKE.with_overrides(["outer.name=frozen", "outer.source=/nonexistent"]))
    with pytest.raises(SpecError, match=r"estimator.num_tasks: 6 is not divisible by the "
                                        r"device count 4; allowed values are multiples of 4"):
        build.validate(SMOKE.with_overrides(["estimator.num_tasks=6", "run.devices=4"]),
                       device_count=4)
