"""lstm_lopt(skip="none") is Andrychowicz et al.'s coordinatewise optimizer: two LSTM layers
shared by all coordinates on the preprocessed gradient, a linear output times out_scale, each
coordinate with its own state. Checked against a float64 numpy forward pass over 3 steps."""

import jax
import jax.numpy as jnp
import numpy as np

from metaopt import lopt


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _reference_updates(theta, grads, p, out_scale):
    cells = [{k: np.asarray(v, np.float64) for k, v in c.items()} for c in theta["cells"]]
    w_o, b_o = (np.asarray(theta["out"][k], np.float64) for k in ("w", "b"))
    n = grads[0].size
    h = [np.zeros((n, 20)), np.zeros((n, 20))]
    c = [np.zeros((n, 20)), np.zeros((n, 20))]
    out = []
    for g in grads:
        g = np.asarray(g, np.float64).ravel()
        big = np.abs(g) >= np.exp(-p)  # the paper's Appendix A preprocessing
        x = np.stack([np.where(big, np.log(np.maximum(np.abs(g), 1e-300)) / p, -1.0),
                      np.where(big, np.sign(g), np.exp(p) * g)], axis=1)
        for layer in range(2):
            gates = x @ cells[layer]["wx"] + h[layer] @ cells[layer]["wh"] + cells[layer]["b"]
            i, f, z, o = np.split(gates, 4, axis=1)
            c[layer] = _sigmoid(f) * c[layer] + _sigmoid(i) * np.tanh(z)
            h[layer] = _sigmoid(o) * np.tanh(c[layer])
            x = h[layer]
        out.append(out_scale * (x @ w_o + b_o)[:, 0])
    return out


def test_skip_none_is_the_papers_two_layer_coordinatewise_lstm():
    lo = lopt.lstm_lopt(hidden=(20, 20), p=10.0, out_scale=0.1, skip="none")
    theta = lo.init(jax.random.key(0))
    assert set(theta) == {"cells", "out"}  # no linear skip
    opt = lo.optimizer(theta)
    rng = np.random.default_rng(0)
    grads = [rng.normal(size=(3, 2)) * s for s in (1.0, 1e-3, 30.0)]
    grads[1][0, 0] = 1e-6  # below exp(-10): the (-1, e^p g) branch
    state = opt.init(jnp.zeros((3, 2)))
    got = []
    for g in grads:
        u, state = opt.update(jnp.asarray(g, jnp.float32), state)
        got.append(np.asarray(u).ravel())
    want = _reference_updates(theta, grads, 10.0, 0.1)
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-6)
