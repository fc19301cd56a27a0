"""The public API re-exported from ``metaopt`` is importable and is what the submodules define."""

import metaopt


def test_all_names_resolve():
    for name in metaopt.__all__:
        assert getattr(metaopt, name) is not None, name


def test_reexports_are_the_submodule_objects():
    from metaopt.estimators.base import Estimator
    from metaopt.lopt.base import LearnedOptimizer
    from metaopt.outer import outer_trainer

    assert metaopt.Estimator is Estimator
    assert metaopt.LearnedOptimizer is LearnedOptimizer
    assert metaopt.outer_trainer is outer_trainer


def test_registries_enumerate_by_name():
    assert {"sgd", "adam", "mlp", "mlp_small", "lstm", "hierarchical"} <= set(metaopt.lopt.names())
    assert {"full_backprop", "tbptt", "es", "pes"} <= set(metaopt.estimators.ESTIMATORS)
    assert set(metaopt.hypergrad.HYPERGRADS) == {"fo", "t1t2", "greedy", "ift", "rmd"}
