"""layer / bidirectional / stack against compositions of plain unrolls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

B, T, D, H = 3, 6, 4, 5
LENGTHS = jnp.array([6, 0, 4])


def identity_cell(size):
    """A user cell whose output is its input: exposes what the layer feeds it."""
    return rj.Cell(init=lambda key, d: {}, step=lambda p, c, x: (c, x), hidden_size=size)


@pytest.fixture
def xs():
    return jax.random.normal(jax.random.PRNGKey(1), (B, T, D))


def test_bidirectional_concat_is_forward_then_reverse(xs):
    cell = rj.cells.lstm(H)
    layer = rj.bidirectional(cell)
    params = layer.init(jax.random.PRNGKey(0), D)
    (c_f, c_b), ys = layer.apply(params, xs, seq_lengths=LENGTHS)
    want_cf, y_f = rj.unroll(cell, params["forward"], xs, seq_lengths=LENGTHS)
    want_cb, y_b = rj.unroll(cell, params["backward"], xs, seq_lengths=LENGTHS, reverse=True)
    np.testing.assert_allclose(ys, np.concatenate([y_f, y_b], -1), atol=1e-6)
    np.testing.assert_allclose(c_f.h, want_cf.h, atol=1e-6)
    np.testing.assert_allclose(c_b.c, want_cb.c, atol=1e-6)


@pytest.mark.parametrize(
    "mode, combine",
    [
        ("sum", lambda a, b: a + b),
        ("mul", lambda a, b: a * b),
        ("ave", lambda a, b: (a + b) / 2),
        (lambda a, b: a - b, lambda a, b: a - b),
    ],
)
def test_merge_modes(xs, mode, combine):
    cell = rj.cells.gru(H)
    params = rj.bidirectional(cell).init(jax.random.PRNGKey(0), D)
    _, ys = rj.bidirectional(cell, merge_mode=mode).apply(params, xs, seq_lengths=LENGTHS)
    _, (y_f, y_b) = rj.bidirectional(cell, merge_mode=None).apply(params, xs, seq_lengths=LENGTHS)
    np.testing.assert_allclose(ys, combine(np.asarray(y_f), np.asarray(y_b)), atol=1e-6)


def test_bad_merge_mode():
    with pytest.raises(ValueError, match="merge_mode"):
        rj.bidirectional(rj.cells.gru(H), merge_mode="max")


def test_stack_is_composition_with_residual(xs):
    cells = [rj.cells.elman(H), rj.cells.gru(H), rj.cells.lstm(H)]
    layer = rj.stack(cells, residual=True)
    params = layer.init(jax.random.PRNGKey(0), D)
    carries, ys = layer.apply(params, xs, seq_lengths=LENGTHS)
    h = xs
    for i, cell in enumerate(cells):
        carry, out = rj.unroll(cell, params[f"layer_{i}"], h, seq_lengths=LENGTHS)
        h = out + h if i > 0 else out
        np.testing.assert_allclose(
            jax.tree_util.tree_leaves(carries[i])[0], jax.tree_util.tree_leaves(carry)[0], atol=1e-6
        )
    np.testing.assert_allclose(ys, h, atol=1e-6)


def test_residual_size_mismatch_is_an_error(xs):
    layer = rj.stack([rj.cells.gru(H), rj.cells.gru(H + 1)], residual=True)
    params = layer.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="residual"):
        layer.apply(params, xs)


def test_dropout_between_layers_only(xs):
    """Layer 1 is the identity, so ys are layer 0's outputs after dropout."""
    layer = rj.stack([rj.cells.gru(H), identity_cell(H)], dropout=0.5)
    params = layer.init(jax.random.PRNGKey(0), D)
    _, clean = layer.apply(params, xs, deterministic=True)
    _, dropped = layer.apply(params, xs, key=jax.random.PRNGKey(3))
    kept = np.asarray(dropped) != 0
    assert 0.3 < kept.mean() < 0.7  # one mask entry per element, rate 0.5
    np.testing.assert_allclose(np.asarray(dropped)[kept], 2 * np.asarray(clean)[kept], rtol=1e-6)
    # not after the last layer: a single-layer stack ignores it
    single = rj.stack([rj.cells.gru(H)], dropout=0.5)
    _, a = single.apply({"layer_0": params["layer_0"]}, xs, key=jax.random.PRNGKey(3))
    np.testing.assert_allclose(a, clean, atol=1e-6)


def test_dropout_between_layers_needs_key(xs):
    layer = rj.stack([rj.cells.gru(H), rj.cells.gru(H)], dropout=0.5)
    params = layer.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="key"):
        layer.apply(params, xs)


def test_stack_initial_carry_must_match_layers(xs):
    layer = rj.stack([rj.cells.gru(H), rj.cells.gru(H)])
    params = layer.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="initial_carry"):
        layer.apply(params, xs, initial_carry=(jnp.zeros((B, H)),))


def test_learned_initial_carry(xs):
    cell = rj.cells.lstm(H)
    layer = rj.layer(cell, learn_initial_carry=True)
    params = layer.init(jax.random.PRNGKey(0), D)
    assert set(params) == set(cell.init(jax.random.PRNGKey(0), D)) | {"initial_carry"}
    params["initial_carry"] = rj.LSTMCarry(jnp.full(H, 0.3), jnp.full(H, -0.2))
    carry, ys = layer.apply(params, xs, seq_lengths=LENGTHS)
    core = {k: v for k, v in params.items() if k != "initial_carry"}
    start = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (B, H)), params["initial_carry"])
    want_carry, want = rj.unroll(cell, core, xs, seq_lengths=LENGTHS, initial_carry=start)
    np.testing.assert_allclose(ys, want, atol=1e-6)
    np.testing.assert_allclose(carry.c[1], params["initial_carry"].c, atol=0)  # length 0

    def loss(p):
        return jnp.sum(layer.apply(p, xs, seq_lengths=LENGTHS)[1] ** 2)

    grad = jax.grad(loss)(params)["initial_carry"]
    assert float(jnp.abs(grad.h).sum()) > 0 and float(jnp.abs(grad.c).sum()) > 0


@pytest.mark.parametrize("time_major", [False, True])
def test_return_sequences_false_gives_output_after_whole_sequence(xs, time_major):
    cell = rj.cells.gru(H)
    layer = rj.bidirectional(cell, time_major=time_major)
    params = layer.init(jax.random.PRNGKey(0), D)
    inputs = jnp.swapaxes(xs, 0, 1) if time_major else xs
    _, last = layer.apply(params, inputs, seq_lengths=LENGTHS, return_sequences=False)
    _, y_f = rj.unroll(cell, params["forward"], xs, seq_lengths=LENGTHS)
    _, y_b = rj.unroll(cell, params["backward"], xs, seq_lengths=LENGTHS, reverse=True)
    for b, n in enumerate(np.asarray(LENGTHS)):
        want_f = y_f[b, n - 1] if n else np.zeros(H)
        want_b = y_b[b, 0]  # zero for length 0
        np.testing.assert_allclose(last[b], np.concatenate([want_f, want_b]), atol=1e-6)


def test_return_sequences_false_with_mask_equals_lengths(xs):
    layer = rj.layer(rj.cells.lstm(H))
    params = layer.init(jax.random.PRNGKey(0), D)
    mask = jnp.arange(T)[None, :] < LENGTHS[:, None]
    _, a = layer.apply(params, xs, seq_lengths=LENGTHS, return_sequences=False)
    _, b = layer.apply(params, xs, mask=mask, return_sequences=False)
    np.testing.assert_allclose(a, b, atol=0)
