"""Equinox and Haiku cells: rj reproduces them within 1e-5 and round trips
are exact; Haiku's reset-before, flipped-gate GRU matches Keras's
GRU(reset_after=False) form and refuses PyTorch-style GRU params."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj
from recurrent_jax import interop

ATOL = 1e-5
D, H, T, B = 3, 4, 5, 2


def perturb(tree, seed):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), a.dtype), tree
    )


def inputs(seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((B, T, D)), jnp.float32)


def rj_outputs(layer, params, x):
    return jax.jit(layer.apply)({"params": params}, x)


def rj_random(cell, seed):
    return perturb(jax.eval_shape(lambda: cell.init(jax.random.PRNGKey(0), D)), seed)


# --- Equinox -------------------------------------------------------------


def eqx_cell(kind, use_bias, seed):
    eqx = pytest.importorskip("equinox")
    make = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[kind]
    # shapes only: Equinox's random init would compile for seconds on CPU
    cell = eqx.filter_eval_shape(make, D, H, use_bias=use_bias, key=jax.random.PRNGKey(0))
    arrays, static = eqx.partition(cell, lambda a: isinstance(a, jax.ShapeDtypeStruct))
    return eqx.combine(perturb(arrays, seed), static)


def eqx_outputs(cell, kind, x):
    def run(xs):  # one example (T, D)
        zeros = jnp.zeros(H)
        state = (zeros, zeros) if kind == "lstm" else zeros

        def step(state, x_t):
            state = cell(x_t, state)
            return state, state[0] if kind == "lstm" else state

        return jax.lax.scan(step, state, xs)[1]

    return jax.jit(jax.vmap(run))(x)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_equinox_cells(kind, use_bias):
    cell = eqx_cell(kind, use_bias, seed=1 + use_bias)
    layer, params = interop.from_equinox(cell)
    x = inputs(1)
    np.testing.assert_allclose(
        rj_outputs(layer, params, x), eqx_outputs(cell, kind, x), rtol=0, atol=ATOL
    )
    back = interop.to_equinox(params, eqx_cell(kind, use_bias, seed=9), layer=layer)
    for name in ("weight_ih", "weight_hh", "bias", "bias_n"):
        if getattr(cell, name, None) is not None:
            np.testing.assert_array_equal(getattr(back, name), getattr(cell, name))


def test_equinox_gru_holds_pytorch_biases():
    """rj's double-bias GRU (PyTorch's) -> Equinox's bias + bias_n, same outputs."""
    rj_cell = rj.cells.gru(H)
    params = rj_random(rj_cell, 3)
    target = interop.to_equinox(params, eqx_cell("gru", True, seed=0))
    x = inputs(3)
    ours = rj_outputs(rj.nn.RNN(rj_cell), params, x)
    np.testing.assert_allclose(ours, eqx_outputs(target, "gru", x), rtol=0, atol=ATOL)
    with pytest.raises(ValueError, match="no bias at all.*use_bias=False"):
        interop.to_equinox(params, eqx_cell("gru", False, seed=0))


# --- Haiku ---------------------------------------------------------------


def haiku_core(kind):
    hk = pytest.importorskip("haiku")

    def forward(x):  # x (T, B, D), time-major as hk.dynamic_unroll
        core = {"lstm": hk.LSTM, "gru": hk.GRU}[kind](H)
        return hk.dynamic_unroll(core, x, core.initial_state(x.shape[1]))[0]

    return hk.without_apply_rng(hk.transform(forward))


def haiku_params(kind, seed):
    fn = haiku_core(kind)
    return perturb(
        jax.eval_shape(lambda: fn.init(jax.random.PRNGKey(0), jnp.zeros((T, B, D)))), seed
    )


def haiku_outputs(kind, params, x):
    return jnp.swapaxes(jax.jit(haiku_core(kind).apply)(params, jnp.swapaxes(x, 0, 1)), 0, 1)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_haiku_cores(kind):
    params = haiku_params(kind, seed=4)
    layer, rj_params = interop.from_haiku(params)
    if kind == "lstm":  # Haiku's +1 forget bias lives in b_hh, exactly
        np.testing.assert_array_equal(rj_params["b_hh"], np.repeat([0.0, 1.0, 0.0, 0.0], H))
    x = inputs(4)
    np.testing.assert_allclose(
        rj_outputs(layer, rj_params, x), haiku_outputs(kind, params, x), rtol=0, atol=ATOL
    )
    back = interop.to_haiku(rj_params, haiku_params(kind, seed=5), layer=layer)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, params)


def test_haiku_lstm_from_pytorch_style_params():
    rj_cell = rj.cells.lstm(H)
    params = rj_random(rj_cell, 6)
    hk_params = interop.to_haiku(params, haiku_params("lstm", 0))
    x = inputs(6)
    ours = rj_outputs(rj.nn.RNN(rj_cell), params, x)
    np.testing.assert_allclose(ours, haiku_outputs("lstm", hk_params, x), rtol=0, atol=ATOL)


def test_haiku_gru_is_reset_before():
    before = rj.cells.gru(H, reset_after=False, bias="single")
    params = rj_random(before, 7)
    hk_params = interop.to_haiku(params, haiku_params("gru", 0), reset_after=False)
    x = inputs(7)
    ours = rj_outputs(rj.nn.RNN(before), params, x)
    np.testing.assert_allclose(ours, haiku_outputs("gru", hk_params, x), rtol=0, atol=ATOL)
    with pytest.raises(
        ValueError, match="haiku.GRU applies the GRU reset gate before.*never PyTorch"
    ):
        interop.to_haiku(rj_random(rj.cells.gru(H), 8), haiku_params("gru", 0))
    with pytest.raises(
        ValueError, match="haiku.GRU holds a cell of family 'gru', the params are 'lstm'"
    ):
        interop.to_haiku(rj_random(rj.cells.lstm(H), 8), haiku_params("gru", 0))
