"""truncated_unroll against one unroll (values) and a chunk loop (gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import recurrent_jax as rj

B, T, D, H = 2, 10, 3, 4


def chunk_loop(cell, params, xs, chunk, lengths):
    """TBPTT by hand: unroll each chunk, stop the gradient between chunks."""
    carry, outs = None, []
    for start in range(0, T, chunk):
        part = xs[:, start : start + chunk]
        n = jnp.clip(lengths - start, 0, part.shape[1])
        if carry is not None:
            carry = jax.lax.stop_gradient(carry)
        carry, ys = rj.unroll(cell, params, part, initial_carry=carry, seq_lengths=n)
        outs.append(ys)
    return carry, jnp.concatenate(outs, axis=1)


@pytest.mark.parametrize("chunk", [3, 5, 10, 12])
def test_values_equal_one_unroll(chunk):
    cell = rj.cells.lstm(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    lengths = jnp.array([T, 7])
    want_c, want = rj.unroll(cell, params, xs, seq_lengths=lengths)
    got_c, got = rj.truncated_unroll(cell, params, xs, truncation_length=chunk, seq_lengths=lengths)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got_c.c, want_c.c, atol=1e-6)


def test_gradients_stop_at_chunk_boundaries():
    cell = rj.cells.gru(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    lengths = jnp.array([T, 8])
    weights = jax.random.normal(jax.random.PRNGKey(2), (B, T, H))

    def loss(fn, p, x):
        return jnp.sum(fn(p, x)[1] * weights)

    got = jax.grad(
        lambda p, x: loss(
            lambda p, x: rj.truncated_unroll(cell, p, x, truncation_length=4, seq_lengths=lengths),
            p,
            x,
        ),
        argnums=(0, 1),
    )(params, xs)
    want = jax.grad(
        lambda p, x: loss(lambda p, x: chunk_loop(cell, p, x, 4, lengths), p, x), argnums=(0, 1)
    )(params, xs)
    for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)
    # and they differ from full BPTT, so the truncation is real
    full = jax.grad(
        lambda x: loss(lambda p, x: rj.unroll(cell, p, x, seq_lengths=lengths), params, x)
    )(xs)
    assert float(jnp.abs(full - got[1]).max()) > 1e-4


def test_loss_on_last_chunk_has_no_gradient_to_earlier_inputs():
    cell = rj.cells.elman(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    grad = jax.grad(
        lambda x: jnp.sum(rj.truncated_unroll(cell, params, x, truncation_length=5)[1][:, 5:])
    )(xs)
    assert float(jnp.abs(grad[:, :5]).max()) == 0.0
    assert float(jnp.abs(grad[:, 5:]).min()) > 0.0


def test_resets_pass_through():
    cell = rj.cells.gru(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    xs = jax.random.normal(jax.random.PRNGKey(1), (B, T, D))
    resets = jnp.zeros((B, T), bool).at[0, 6].set(True).at[1, 3].set(True)
    _, want = rj.unroll(cell, params, xs, resets=resets)
    _, got = rj.truncated_unroll(cell, params, xs, truncation_length=4, resets=resets)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_bad_truncation_length():
    cell = rj.cells.gru(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    with pytest.raises(ValueError, match="truncation_length: expected a positive int, got None"):
        rj.truncated_unroll(cell, params, jnp.zeros((B, T, D)), truncation_length=None)
    with pytest.raises(ValueError, match="truncation_length"):
        rj.truncated_unroll(cell, params, jnp.zeros((B, T, D)), truncation_length=0)
    with pytest.raises(ValueError, match="reverse"):
        rj.truncated_unroll(cell, params, jnp.zeros((B, T, D)), truncation_length=2, reverse=True)


def test_truncation_length_is_required():
    """``chunk_length`` is the engine's (the "chunked" backend's chunk), not
    a window length: without ``truncation_length`` the call is an error."""
    cell = rj.cells.gru(H)
    params = cell.init(jax.random.PRNGKey(0), D)
    with pytest.raises(TypeError, match="truncation_length"):
        rj.truncated_unroll(cell, params, jnp.zeros((B, T, D)), chunk_length=3)
