"""ConvLSTM and ConvGRU against a NumPy transcription of the equations (loops
over time and kernel offsets), over 1, 2 and 3 spatial axes, and in the
engine's layers, regularisers and front doors."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

B, T, C, F = 2, 4, 2, 3
LENGTHS = np.array([4, 2])


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def conv_same(x, kernel):
    """x (B, *S, C), kernel (*k, C, O): a stride-1 'same' convolution by
    summing shifted copies, one kernel offset at a time."""
    spatial = kernel.ndim - 2
    pads = [(0, 0)] + [(k // 2, k // 2) for k in kernel.shape[:spatial]] + [(0, 0)]
    padded = np.pad(x, pads)
    out = np.zeros((*x.shape[:-1], kernel.shape[-1]))
    for offset in itertools.product(*(range(k) for k in kernel.shape[:spatial])):
        window = tuple(slice(o, o + n) for o, n in zip(offset, x.shape[1:-1], strict=True))
        out += padded[(slice(None), *window)] @ kernel[offset]
    return out


def numpy_conv_lstm(p, xs, lengths):
    f64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h = np.zeros((*xs.shape[:1], *xs.shape[2:-1], F))
    c, ys = h.copy(), np.zeros((*xs.shape[:-1], F))
    bias = f64.get("b", 0) + f64.get("b_ih", 0) + f64.get("b_hh", 0)
    for t in range(xs.shape[1]):
        gates = conv_same(xs[:, t], f64["k_ih"]) + conv_same(h, f64["k_hh"]) + bias
        i, f, g, o = np.split(gates, 4, axis=-1)
        c_new = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
        h_new = sigmoid(o) * np.tanh(c_new)
        valid = (t < lengths).reshape(-1, *(1,) * (h.ndim - 1))
        h, c = np.where(valid, h_new, h), np.where(valid, c_new, c)
        ys[:, t] = np.where(valid, h_new, 0.0)
    return (h, c), ys


def numpy_conv_gru(p, xs, lengths):
    f64 = {k: np.asarray(v, np.float64) for k, v in p.items()}
    h = np.zeros((*xs.shape[:1], *xs.shape[2:-1], F))
    ys = np.zeros((*xs.shape[:-1], F))
    for t in range(xs.shape[1]):
        x_r, x_z, x_n = np.split(conv_same(xs[:, t], f64["k_ih"]) + f64["b_ih"], 3, axis=-1)
        h_r, h_z, h_n = np.split(conv_same(h, f64["k_hh"]) + f64["b_hh"], 3, axis=-1)
        r, z = sigmoid(x_r + h_r), sigmoid(x_z + h_z)
        h_new = (1 - z) * np.tanh(x_n + r * h_n) + z * h
        valid = (t < lengths).reshape(-1, *(1,) * (h.ndim - 1))
        h = np.where(valid, h_new, h)
        ys[:, t] = np.where(valid, h_new, 0.0)
    return h, ys


def random_params(cell, key, input_size=C):
    params = cell.init(key, input_size)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(params))
    return {
        k: v + 0.3 * jax.random.normal(kk, v.shape)
        for (k, v), kk in zip(params.items(), keys, strict=True)
    }


SPATIAL = {1: (5,), 2: (5, 4), 3: (3, 4, 3)}


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_conv_lstm_equals_the_numpy_equations(spatial):
    kernel = (3, 5, 3)[:spatial]
    cell = rj.cells.conv_lstm(F, kernel)
    params = random_params(cell, jax.random.key(spatial))
    xs = np.random.default_rng(spatial).normal(size=(B, T, *SPATIAL[spatial], C))
    (h, c), want = numpy_conv_lstm(params, xs, LENGTHS)
    carry, ys = rj.unroll(cell, params, jnp.asarray(xs, jnp.float32), seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry.h, h, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry.c, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spatial", [1, 2])
def test_conv_gru_equals_the_numpy_equations(spatial):
    cell = rj.cells.conv_gru(F, 3, spatial_dims=spatial)
    params = random_params(cell, jax.random.key(10 + spatial))
    xs = np.random.default_rng(spatial).normal(size=(B, T, *SPATIAL[spatial], C))
    h, want = numpy_conv_gru(params, xs, LENGTHS)
    carry, ys = rj.unroll(cell, params, jnp.asarray(xs, jnp.float32), seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(carry, h, rtol=1e-5, atol=1e-5)


def test_a_one_by_one_kernel_is_the_dense_cell_at_every_position():
    """k = 1: each position runs rj.cells.lstm on its own channels."""
    conv = rj.cells.conv_lstm(F, (1, 1))
    params = random_params(conv, jax.random.key(3))
    dense = {"w_ih": params["k_ih"][0, 0], "w_hh": params["k_hh"][0, 0]}
    dense |= {"b_ih": params["b_ih"], "b_hh": params["b_hh"]}
    xs = jax.random.normal(jax.random.key(4), (B, T, 3, 2, C))
    _, ys = rj.unroll(conv, params, xs)
    flat = jnp.moveaxis(xs, 1, 3).reshape(-1, T, C)  # (B*3*2, T, C)
    _, want = rj.unroll(rj.cells.lstm(F), dense, flat)
    want = jnp.moveaxis(want.reshape(B, 3, 2, T, F), 3, 1)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)


def test_layers_stack_bidirectional_and_final_output():
    """A bidirectional ConvLSTM stack: the layer outputs equal two unrolls
    by hand; return_sequences=False picks each sequence's last valid step."""
    net = rj.stack([rj.bidirectional(rj.cells.conv_lstm(F, (3, 3))), rj.cells.conv_gru(F, (3, 3))])
    params = net.init(jax.random.key(5), C)
    xs = jax.random.normal(jax.random.key(6), (B, T, 4, 4, C))
    carries, ys = net.apply(params, xs, seq_lengths=LENGTHS)
    assert ys.shape == (B, T, 4, 4, F)
    layer0 = params["layer_0"]
    cell = rj.cells.conv_lstm(F, (3, 3))
    _, y_f = rj.unroll(cell, layer0["forward"], xs, seq_lengths=LENGTHS)
    _, y_b = rj.unroll(cell, layer0["backward"], xs, seq_lengths=LENGTHS, reverse=True)
    _, want = rj.unroll(
        rj.cells.conv_gru(F, (3, 3)),
        params["layer_1"],
        jnp.concatenate([y_f, y_b], -1),
        seq_lengths=LENGTHS,
    )
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    _, last = net.apply(params, xs, seq_lengths=LENGTHS, return_sequences=False)
    np.testing.assert_allclose(last, ys[jnp.arange(B), LENGTHS - 1], rtol=1e-6, atol=1e-7)


def test_regularisers_and_remat_with_spatial_carries():
    cell = rj.cells.conv_lstm(F, (3, 3))
    params = cell.init(jax.random.key(7), C)
    xs = jax.random.normal(jax.random.key(8), (B, 5, 4, 4, C))
    options = dict(dropout=0.2, recurrent_dropout=0.2, zoneout=0.1, key=jax.random.key(9))
    plain = rj.unroll(cell, params, xs, seq_lengths=np.array([5, 3]), **options)
    remat = rj.unroll(cell, params, xs, seq_lengths=np.array([5, 3]), remat=2, **options)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), plain, remat)
    grads = jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs, remat=2, **options)[1] ** 2))(params)
    assert all(
        np.isfinite(g).all() and np.abs(g).sum() > 0 for g in jax.tree_util.tree_leaves(grads)
    )


def test_front_doors_run_conv_cells():
    from flax import nnx

    xs = jax.random.normal(jax.random.key(10), (B, T, 4, 4, C))
    cell = rj.cells.conv_gru(F, (3, 3))
    module = rj.nn.RNN(cell)
    variables = module.init(jax.random.key(11), xs)
    params = variables["params"]
    want = rj.unroll(cell, params, xs)[1]
    np.testing.assert_allclose(module.apply(variables, xs), want, rtol=1e-6)
    n = rj.nnx.RNN(cell, C, rngs=nnx.Rngs(0))
    assert n(xs).shape == (B, T, 4, 4, F)
    pytest.importorskip("equinox")
    e = rj.eqx.RNN(cell, C, key=jax.random.key(12))
    assert e(xs).shape == (B, T, 4, 4, F)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: rj.cells.conv_lstm(F, 3), r"kernel_size: an int \(3\) needs spatial_dims"),
        (lambda: rj.cells.conv_lstm(F, (2, 3)), r"kernel_size: expected odd positive sizes"),
        (lambda: rj.cells.conv_gru(F, (3, 3), spatial_dims=1), r"spatial_dims: 1 but"),
        (lambda: rj.cells.conv_gru(0, (3,)), r"features: expected a positive int"),
    ],
)
def test_constructor_errors_name_the_argument(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_backends_other_than_scan_say_why_and_packing_refuses():
    cell = rj.cells.conv_lstm(F, (3,))
    params = cell.init(jax.random.key(0), C)
    xs = jnp.zeros((B, T, 5, C))
    with pytest.raises(ValueError, match=r"impl: 'fused' cannot be used here: .*spatial axes"):
        rj.unroll(cell, params, xs, impl="fused")
    with pytest.raises(ValueError, match=r"xs: expected an array of shape \(\*batch, T, S1, D\)"):
        rj.unroll(cell, params, jnp.zeros((T, C)))
    with pytest.raises(ValueError, match="cell: truncated_unroll needs a cell without spatial"):
        rj.truncated_unroll(cell, params, xs, truncation_length=2)
    with pytest.raises(ValueError, match="a Packed input needs a cell without spatial axes"):
        rj.unroll(cell, params, rj.pack([np.zeros((2, C), np.float32)]))
