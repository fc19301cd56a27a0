"""Every estimator's cost counters, read off its program: the ``vjps`` and ``inner_steps``
metrics equal the VJPs through the inner map and the inner updates in the estimator's jaxpr.

The problem is the Shaban toy whose map ``Phi`` has a custom VJP carrying two marker
primitives, identities at float32: ``optimization_barrier`` in its forward pass (one per
evaluation of ``Phi``) and ``reduce_precision`` in its backward pass (one per VJP). A marker
executes ``rows`` times per occurrence (its operand's rows: the batched tasks, ``w`` has 2
entries) times the trip counts of the scans around it; so the counts below come from the
programs, not from the estimators' own bookkeeping (the seed's table, FO 0, T1-T2 1, greedy T,
IFT K + 1, RMD T, is read off them, not re-typed).
"""

import jax
import jax.numpy as jnp
import pytest

from metaopt import estimators
from metaopt import hypergrad as hg

HORIZON, TASKS, DIM = 6, 3, 2


def _marked_toy(horizon: int) -> hg.Bilevel:
    bl = hg.shaban_toy(horizon)

    @jax.custom_vjp
    def phi(w, alpha, b):
        return bl.phi(jax.lax.optimization_barrier(w), alpha, b)

    def fwd(w, alpha, b):
        return phi(w, alpha, b), (w, alpha, b)

    def bwd(res, g):
        w, alpha, b = res
        g = jax.lax.reduce_precision(g, exponent_bits=8, mantissa_bits=23)
        dw, da = jax.vjp(lambda w_, a_: bl.phi(w_, a_, b), w, alpha)[1](g)
        return dw, da, jax.tree.map(jnp.zeros_like, b)

    phi.defvjp(fwd, bwd)
    return bl._replace(phi=phi)


def count(jaxpr, name: str) -> int:
    """Rows processed by primitive ``name`` in a jaxpr: each occurrence counts its operand's
    size / DIM, times the lengths of the scans around it; the costlier branch of a cond."""
    closed, plain = jax.extend.core.ClosedJaxpr, jax.extend.core.Jaxpr
    total = 0
    for eqn in jaxpr.eqns:
        prim = eqn.primitive.name
        if prim == name:
            total += sum(v.aval.size for v in eqn.invars) // DIM
        elif prim == "while":
            raise AssertionError("a while loop has no static trip count")
        elif prim == "cond":
            total += max(count(b.jaxpr, name) for b in eqn.params["branches"])
        else:
            inner = sum(count(v.jaxpr if isinstance(v, closed) else v, name)
                        for v in eqn.params.values() if isinstance(v, closed | plain))
            total += inner * (eqn.params["length"] if prim == "scan" else 1)
    return total


CASES = {
    "full_backprop": dict(meta_loss="valid"),
    "full_backprop chunks": dict(meta_loss="valid", checkpoint_every=3, remat="none"),
    "full_backprop two-level": dict(meta_loss="last", checkpoint_every=3),
    "full_backprop no-remat": dict(meta_loss="valid", remat="none"),
    "full_backprop last": dict(meta_loss="last"),
    "tbptt": dict(unroll_length=4, meta_loss="last"),
    "tbptt no-remat": dict(unroll_length=4, meta_loss="last", remat="none"),
    "tbptt remat-valid": dict(unroll_length=4, meta_loss="valid"),
    "es": dict(sigma=0.1),
    "truncated_es": dict(sigma=0.1, unroll_length=4),
    "pes": dict(sigma=0.1, unroll_length=4), "nres": dict(sigma=0.1, unroll_length=4),
    "fo": dict(), "t1t2": dict(), "ift": dict(num_terms=4), "greedy": dict(gamma=0.9),
    "rmd": dict(), "greedy online": dict(gamma=0.9, unroll_length=4),
    "rmd online": dict(unroll_length=4), "rmd remat": dict(remat=True),
}


def test_every_registered_estimator_is_covered():
    assert {case.split()[0] for case in CASES} == set(estimators.names())


@pytest.mark.parametrize("case", sorted(CASES))
def test_cost_metrics_equal_the_products_in_the_program(case):
    problem = hg.as_problem(_marked_toy(HORIZON))
    est = estimators.make(case.split()[0], problem, num_tasks=TASKS, **CASES[case])
    key, alpha = jax.random.key(0), jnp.zeros(DIM)
    state = est.init(key, alpha)
    jaxpr = jax.make_jaxpr(est.estimate)(key, alpha, state).jaxpr
    metrics = jax.jit(est.estimate)(key, alpha, state)[2]
    assert float(metrics["vjps"]) == count(jaxpr, "reduce_precision")
    assert float(metrics["jvps"]) == 0
    forward = count(jaxpr, "optimization_barrier")
    if case == "ift":  # one more evaluation of Phi per task, at w_T, to linearize it there
        forward -= TASKS
    assert float(metrics["inner_steps"]) == forward
    assert forward > 0
