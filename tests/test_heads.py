"""Multi-head (block-diagonal) LSTM, GRU and Elman cells against the dense
cell holding the same blocks on the diagonal of W_hh, zeros elsewhere."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

B, T, D, H = 3, 6, 4, 8
GATES = {"lstm": 4, "gru": 3, "elman": 1}
LENGTHS = np.array([6, 2, 0])


def block_diagonal(w_heads, num_gates):
    """(n, H/n, G*H/n) head blocks -> the dense (H, G*H) gate-major W_hh."""
    n, size, _ = w_heads.shape
    hidden = n * size
    dense = np.zeros((hidden, num_gates * hidden), w_heads.dtype)
    for head in range(n):
        rows = slice(head * size, (head + 1) * size)
        for g in range(num_gates):
            cols = slice(g * hidden + head * size, g * hidden + (head + 1) * size)
            dense[rows, cols] = w_heads[head][:, g * size : (g + 1) * size]
    return jnp.asarray(dense)


@pytest.mark.parametrize("name", list(GATES))
@pytest.mark.parametrize("num_heads", [2, 4, 8])
@pytest.mark.parametrize("reverse", [False, True])
def test_heads_equal_the_dense_cell_with_block_diagonal_weights(name, num_heads, reverse):
    make = rj.cells.REGISTRY[name]
    cell = make(H, num_heads=num_heads)
    params = cell.init(jax.random.key(num_heads), D)
    assert params["w_hh"].shape == (num_heads, H // num_heads, GATES[name] * H // num_heads)
    dense = dict(params, w_hh=block_diagonal(np.asarray(params["w_hh"]), GATES[name]))
    xs = jax.random.normal(jax.random.key(1), (B, T, D))

    def loss(p, c):
        carry, ys = rj.unroll(c, p, xs, seq_lengths=LENGTHS, reverse=reverse)
        return jnp.sum(ys**2) + sum(jnp.sum(x**2) for x in jax.tree_util.tree_leaves(carry))

    got, grads = jax.value_and_grad(loss)(params, cell)
    want, dense_grads = jax.value_and_grad(loss)(dense, make(H))
    np.testing.assert_allclose(got, want, rtol=1e-5)
    np.testing.assert_allclose(grads["w_ih"], dense_grads["w_ih"], rtol=1e-4, atol=1e-5)
    # the heads' gradient is the dense gradient's diagonal blocks
    np.testing.assert_allclose(
        block_diagonal(np.asarray(grads["w_hh"]), GATES[name]),
        np.asarray(dense_grads["w_hh"])
        * (block_diagonal(np.ones_like(params["w_hh"]), GATES[name]) > 0),
        rtol=1e-4,
        atol=1e-5,
    )


@pytest.mark.parametrize("name", list(GATES))
def test_one_head_is_the_dense_cell_to_the_bit(name):
    make = rj.cells.REGISTRY[name]
    one = make(H, num_heads=1)
    params = one.init(jax.random.key(0), D)
    dense = dict(params, w_hh=params["w_hh"][0])
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    got = rj.unroll(one, params, xs, seq_lengths=LENGTHS, impl="scan")
    want = rj.unroll(make(H), dense, xs, seq_lengths=LENGTHS, impl="scan")
    jax.tree_util.tree_map(np.testing.assert_array_equal, got, want)


def test_heads_in_layers_and_doors():
    net = rj.stack([rj.bidirectional(rj.cells.gru(H, num_heads=4)), rj.cells.lstm(H, num_heads=2)])
    params = net.init(jax.random.key(0), D)
    xs = jax.random.normal(jax.random.key(1), (B, T, D))
    _, ys = net.apply(params, xs, seq_lengths=LENGTHS)
    assert ys.shape == (B, T, H)
    module = rj.nn.RNN(rj.cells.elman(H, num_heads=2))
    variables = module.init(jax.random.key(2), xs)
    assert variables["params"]["w_hh"].shape == (2, H // 2, H // 2)


def test_head_errors_and_peers_that_cannot_hold_heads():
    with pytest.raises(ValueError, match="num_heads: expected a divisor of hidden_size=8, got 3"):
        rj.cells.lstm(H, num_heads=3)
    with pytest.raises(ValueError, match="num_heads: needs reset_after=True"):
        rj.cells.gru(H, num_heads=2, reset_after=False)
    with pytest.raises(ValueError, match="num_heads: cannot be combined with proj_size"):
        rj.cells.lstm(H, num_heads=2, proj_size=4)
    cell = rj.cells.lstm(H, num_heads=2)
    params = cell.init(jax.random.key(0), D)
    with pytest.raises(ValueError, match="impl: 'fused' cannot be used here"):
        rj.unroll(cell, params, jnp.zeros((B, T, D)), impl="fused")
    from recurrent_jax.interop._layout import blocks

    with pytest.raises(ValueError, match="a multi-head cell's block-diagonal w_hh"):
        blocks("lstm", params, "torch LSTM")


def test_num_heads_reaches_every_front_door_and_configs():
    """The stacked modules of linen, NNX and Equinox and a config's
    ``model.num_heads`` build the same headed cell as the core."""
    from flax import nnx

    from recurrent_jax.train import config_files, core
    from recurrent_jax.train.config import from_config_dict

    xs = jax.random.normal(jax.random.key(0), (B, T, D))
    module = rj.nn.LSTM(H, num_layers=2, num_heads=4)
    params = module.init(jax.random.key(1), xs)["params"]
    assert params["layer_0"]["w_hh"].shape == (4, H // 4, 4 * H // 4)
    _, want = rj.stack([rj.cells.lstm(H, num_heads=4)] * 2).apply(params, xs)
    np.testing.assert_allclose(module.apply({"params": params}, xs), want, rtol=1e-6)
    assert rj.nnx.GRU(D, H, num_heads=2, rngs=nnx.Rngs(0))(xs).shape == (B, T, H)
    pytest.importorskip("equinox")
    assert rj.eqx.SimpleRNN(D, H, num_heads=2, key=jax.random.key(2))(xs).shape == (B, T, H)
    raw = config_files.load_config("adding:smoke")
    config_files.apply_overrides(raw, [("model.num_heads", "2")])
    config = from_config_dict(raw)
    state = core.init_state(
        core.make_setup(config), core.default_hparams(config), jax.random.key(3)
    )
    assert state.params["rnn"]["layer_0"]["w_hh"].shape == (2, 4, 16)
    config_files.apply_overrides(raw, [("model.num_heads", "3")])
    with pytest.raises(
        ValueError, match="model.num_heads: expected a divisor of model.hidden_size=8"
    ):
        from_config_dict(raw)
