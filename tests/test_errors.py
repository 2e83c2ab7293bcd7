"""Bad input fails at trace time, with a message naming the argument.

Every ``unroll`` case runs under ``jax.eval_shape``: the error must come from
tracing, before anything is compiled or run.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import H, make, normal

import recurrent_jax as rj

B, T, D = 2, 4, 3


@pytest.fixture
def lstm_case(rng):
    cell, params = make("lstm", rng)
    return cell, params, normal(rng, (B, T, D))


def trace(cell, params, xs, **kwargs):
    return jax.eval_shape(lambda p, x: rj.unroll(cell, p, x, **kwargs), params, xs)


def test_valid_call_traces(lstm_case):
    cell, params, xs = lstm_case
    carry, ys = trace(cell, params, xs, seq_lengths=np.array([T, 1]))
    assert ys.shape == (B, T, H) and carry.c.shape == (B, H)


# --- xs ----------------------------------------------------------------------------


def test_xs_integer_dtype(lstm_case):
    cell, params, _ = lstm_case
    with pytest.raises(TypeError, match="xs.*floating"):
        trace(cell, params, jnp.ones((B, T, D), jnp.int32))


@pytest.mark.parametrize("shape", [(D,), ()])
def test_xs_rank_too_small(lstm_case, shape):
    cell, params, _ = lstm_case
    with pytest.raises(ValueError, match="xs"):
        trace(cell, params, jnp.ones(shape))


def test_xs_wrong_feature_size(lstm_case):
    cell, params, _ = lstm_case
    with pytest.raises(ValueError, match=r"xs.*\b3\b.*features"):
        trace(cell, params, jnp.ones((B, T, D + 2)))


def test_xs_wrong_feature_size_time_major(lstm_case):
    cell, params, _ = lstm_case
    with pytest.raises(ValueError, match="xs"):
        trace(cell, params, jnp.ones((T, B, D + 1)), time_major=True)


# --- seq_lengths and mask ----------------------------------------------------------


@pytest.mark.parametrize(
    "lengths, error, pattern",
    [
        (np.array([2.0, 3.0]), TypeError, "seq_lengths.*integers"),
        (np.array([True, False]), TypeError, "seq_lengths"),
        (np.array([-1, 2]), ValueError, r"seq_lengths.*\[0, 4\]"),
        (np.array([2, T + 1]), ValueError, r"seq_lengths.*\[0, 4\]"),
        (np.array([1, 2, 3]), ValueError, r"seq_lengths.*shape \(2,\)"),
        (np.array([[1, 2]]), ValueError, "seq_lengths.*shape"),
        (np.array(2), ValueError, "seq_lengths.*shape"),
        ([1.5, 2], TypeError, "seq_lengths"),
    ],
)
def test_bad_seq_lengths(lstm_case, lengths, error, pattern):
    cell, params, xs = lstm_case
    with pytest.raises(error, match=pattern):
        trace(cell, params, xs, seq_lengths=lengths)


def test_bad_traced_seq_lengths_dtype(lstm_case):
    cell, params, xs = lstm_case
    with pytest.raises(TypeError, match="seq_lengths"):
        jax.eval_shape(
            lambda n: rj.unroll(cell, params, xs, seq_lengths=n), jnp.ones((B,), jnp.float32)
        )


@pytest.mark.parametrize(
    "mask, error",
    [
        (np.ones((B, T), np.int32), TypeError),
        (np.ones((B, T), np.float32), TypeError),
        (np.ones((B, T + 1), bool), ValueError),
        (np.ones((T, B), bool), ValueError),  # time-major mask for batch-major xs
        (np.ones((B,), bool), ValueError),
    ],
)
def test_bad_mask(lstm_case, mask, error):
    cell, params, xs = lstm_case
    with pytest.raises(error, match="mask"):
        trace(cell, params, xs, mask=mask)


def test_mask_time_major_shape(lstm_case):
    cell, params, xs = lstm_case
    xs_tm = jnp.swapaxes(xs, 0, 1)
    trace(cell, params, xs_tm, mask=np.ones((T, B), bool), time_major=True)
    with pytest.raises(ValueError, match=r"mask.*\(4, 2\)"):
        trace(cell, params, xs_tm, mask=np.ones((B, T), bool), time_major=True)


def test_seq_lengths_and_mask_together(lstm_case):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match="seq_lengths.*mask"):
        trace(cell, params, xs, seq_lengths=np.array([1, 2]), mask=np.ones((B, T), bool))


@pytest.mark.parametrize(
    "resets, error",
    [(np.ones((B, T), np.int32), TypeError), (np.ones((B, T + 1), bool), ValueError)],
)
def test_bad_resets(lstm_case, resets, error):
    cell, params, xs = lstm_case
    with pytest.raises(error, match="resets"):
        trace(cell, params, xs, resets=resets)


# --- carries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "carry, error",
    [
        (jnp.zeros((B, H)), ValueError),  # an array where LSTMCarry is expected
        ((jnp.zeros((B, H)), jnp.zeros((B, H))), ValueError),  # a plain tuple
        (rj.LSTMCarry(jnp.zeros((B, H)), jnp.zeros((B, H + 1))), ValueError),
        (rj.LSTMCarry(jnp.zeros((B + 1, H)), jnp.zeros((B + 1, H))), ValueError),
        (rj.LSTMCarry(jnp.zeros((H,)), jnp.zeros((H,))), ValueError),  # no batch dim
        (rj.LSTMCarry(jnp.zeros((B, H), jnp.int32), jnp.zeros((B, H))), TypeError),
    ],
)
def test_bad_initial_carry(lstm_case, carry, error):
    cell, params, xs = lstm_case
    with pytest.raises(error, match="initial_carry"):
        trace(cell, params, xs, initial_carry=carry)


def test_bad_initial_carry_for_array_carry(rng):
    cell, params = make("gru", rng)
    xs = normal(rng, (B, T, D))
    with pytest.raises(ValueError, match="initial_carry"):
        trace(cell, params, xs, initial_carry=jnp.zeros((B, H + 1)))
    with pytest.raises(ValueError, match="initial_carry"):
        trace(cell, params, xs, initial_carry=rj.LSTMCarry(jnp.zeros((B, H)), jnp.zeros((B, H))))


def test_bad_reset_carry(lstm_case):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match="reset_carry"):
        trace(
            cell,
            params,
            xs,
            resets=np.zeros((B, T), bool),
            reset_carry=rj.LSTMCarry(jnp.zeros((B, H + 1)), jnp.zeros((B, H))),
        )


def test_user_cell_without_carry_or_hidden_size(rng):
    cell = rj.Cell(init=lambda key, d: {}, step=lambda p, c, x: (c, x))
    with pytest.raises(ValueError, match="initial_carry"):
        trace(cell, {}, normal(rng, (B, T, D)))
    # either one is enough
    sized = cell._replace(hidden_size=D)
    _, ys = trace(sized, {}, normal(rng, (B, T, D)))
    assert ys.shape == (B, T, D)


# --- engine options ------------------------------------------------------------------


@pytest.mark.parametrize("impl", ["cudnn_typo", "SCAN", "", None])
def test_unknown_impl(lstm_case, impl):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match="impl"):
        trace(cell, params, xs, impl=impl)


@pytest.mark.parametrize("unroll", [0, -2, 1.5, True, "fast", None])
def test_bad_unroll(lstm_case, unroll):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match="unroll"):
        trace(cell, params, xs, unroll=unroll)


@pytest.mark.parametrize("rate_name", ["dropout", "recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("rate", [1.0, -0.1, 1.5])
def test_bad_rates(lstm_case, rate_name, rate, key):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match=rate_name):
        trace(cell, params, xs, key=key, **{rate_name: rate})


@pytest.mark.parametrize("rate_name", ["dropout", "zoneout"])
def test_bad_rates_in_evaluation_mode(lstm_case, rate_name):
    cell, params, xs = lstm_case
    with pytest.raises(ValueError, match=rate_name):
        trace(cell, params, xs, deterministic=True, **{rate_name: 1.5})


# --- cell constructors ---------------------------------------------------------------


@pytest.mark.parametrize("make_cell", [rj.cells.lstm, rj.cells.gru, rj.cells.elman, rj.cells.mgu])
def test_unknown_cell_option(make_cell):
    with pytest.raises(TypeError, match="not_an_option"):
        make_cell(H, not_an_option=1)


@pytest.mark.parametrize("make_cell", [rj.cells.lstm, rj.cells.gru, rj.cells.elman, rj.cells.mgu])
@pytest.mark.parametrize("bias", ["triple", "both", None, True])
def test_bad_bias_mode(make_cell, bias):
    with pytest.raises(ValueError, match="bias"):
        make_cell(H, bias=bias)


@pytest.mark.parametrize("make_cell", [rj.cells.lstm, rj.cells.gru, rj.cells.elman, rj.cells.mgu])
@pytest.mark.parametrize("size", [0, -3, 2.0, True, "4", None])
def test_bad_hidden_size(make_cell, size):
    with pytest.raises(ValueError, match="hidden_size"):
        make_cell(size)


@pytest.mark.parametrize("size", [0, -1, 1.5])
def test_bad_proj_size(size):
    with pytest.raises(ValueError, match="proj_size"):
        rj.cells.lstm(H, proj_size=size)


@pytest.mark.parametrize("activation", ["sigmoid", "", None])
def test_bad_elman_activation(activation):
    with pytest.raises(ValueError, match="activation"):
        rj.cells.elman(H, activation=activation)


@pytest.mark.parametrize("size", [0, -1, 2.5])
def test_bad_input_size(size, key):
    with pytest.raises(ValueError, match="input_size"):
        rj.cells.lstm(H).init(key, size)
