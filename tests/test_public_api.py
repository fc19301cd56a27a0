"""The public API re-exported from ``metaopt`` is what the submodules define, and the one
registry per concept builds every entry from its spec."""

import json

import pytest

import metaopt
from metaopt import estimators, lopt, tasks
from metaopt.inner import truncation
from metaopt.spec import Spec, SpecError


def test_star_import_gives_exactly_all():
    namespace: dict = {}
    exec("from metaopt import *", namespace)  # raises if a name in __all__ does not exist
    assert set(namespace) - {"__builtins__"} == set(metaopt.__all__)


def test_reexports_are_the_submodule_objects():
    from metaopt.estimators.base import Estimator
    from metaopt.lopt.base import LearnedOptimizer
    from metaopt.outer import outer_trainer
    from metaopt.tasks.base import Task, TaskFamily

    assert metaopt.Estimator is Estimator
    assert metaopt.LearnedOptimizer is LearnedOptimizer
    assert metaopt.outer_trainer is outer_trainer
    assert metaopt.Task is Task and metaopt.TaskFamily is TaskFamily


REGISTRIES = {"lopt": lopt.REGISTRY, "task": tasks.REGISTRY, "schedule": truncation.REGISTRY,
              "estimator": estimators.REGISTRY}


@pytest.mark.parametrize("concept", sorted(REGISTRIES))
def test_every_resolved_spec_survives_json(concept):
    """resolve fills every option; Spec -> JSON -> Spec gives the same options back."""
    reg = REGISTRIES[concept]
    required = {"schedule": {"constant": {"length": 5}, "log_uniform":
                             {"min_length": 2, "max_length": 9}},
                "estimator": {"pes": {"sigma": 0.1, "unroll_length": 3, "num_tasks": 2},
                              "es": {"sigma": 0.1, "num_tasks": 2},
                              "truncated_es": {"sigma": 0.1, "unroll_length": 3,
                                               "num_tasks": 2},
                              "tbptt": {"unroll_length": 3, "num_tasks": 2},
                              "nres": {"sigma": 0.1, "unroll_length": 3, "num_tasks": 2},
                              "full_backprop": {"num_tasks": 2},
                              "greedy": {"gamma": 0.9}}}.get(concept, {})
    for name in reg.names():
        spec = reg.spec(name, required.get(name, {}))
        again = Spec.from_json(json.loads(json.dumps(spec.to_json())))
        assert again == spec, name
        assert reg.resolve(name, again.options) == dict(spec.options)


def test_registry_errors_name_the_entry_option_and_allowed_values():
    with pytest.raises(SpecError, match=r"lopt: unknown learned optimizer 'adamw'; allowed "
                                        r"values are \['sgd'"):
        lopt.REGISTRY.make("adamw")
    with pytest.raises(SpecError, match=r"mlp.width: unknown option 'width'; allowed options "
                                        r"are \['hidden'"):
        lopt.REGISTRY.make("mlp", width=3)
    with pytest.raises(SpecError, match=r"mlp.hidden: expected a comma-separated list of "
                                        r"integers, got"):
        lopt.REGISTRY.make("mlp", hidden=(32, 0.5))
    with pytest.raises(SpecError, match="pes.sigma: required option missing"):
        estimators.REGISTRY.resolve("pes", {"num_tasks": 2, "unroll_length": 3})
    with pytest.raises(SpecError, match="mlp.exp_mult: expected a finite number"):
        lopt.REGISTRY.parse("mlp", "exp_mult", "inf")


def test_text_parses_by_the_option_type():
    reg = lopt.REGISTRY
    assert reg.parse("mlp", "hidden", "64,64") == (64, 64)
    assert reg.parse("mlp", "exp_mult", "1e-2") == 0.01
    assert reg.parse("momentum", "nesterov", "true") is True
    assert reg.parse("sgd", "schedule", "none") is None
    assert reg.parse("sgd", "schedule", "cosine") == "cosine"
    with pytest.raises(SpecError, match="momentum.nesterov: expected true/false"):
        reg.parse("momentum", "nesterov", "maybe")
