"""xLSTM cells: the mLSTM parallel form equals its recurrent form; sLSTM
equals a NumPy transcription of its equations. fp32 tolerances: values
atol 2e-5 + rtol 1e-5, gradients atol 1e-4 + rtol 1e-3."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import D, assert_trees_close, normal, random_carry, random_params

import recurrent_jax as rj

H = 6


@pytest.mark.parametrize("forget_gate", ["sigmoid", "exp"])
def test_mlstm_parallel_equals_recurrent(forget_gate, rng):
    cell = rj.cells.mlstm(H, num_heads=2, forget_gate=forget_gate)
    params = random_params(cell, rng)
    xs = normal(rng, (2, 3, 9, D))
    h0 = random_carry(cell, rng, (2, 3))
    parallel = jax.jit(
        lambda p, x, c: rj.cells.mlstm_parallel(
            cell, p, x, initial_carry=c, forget_gate=forget_gate
        )
    )
    recurrent = jax.jit(lambda p, x, c: rj.unroll(cell, p, x, initial_carry=c, impl="scan"))
    assert_trees_close(parallel(params, xs, h0), recurrent(params, xs, h0), atol=2e-5, rtol=1e-5)
    loss = lambda f: lambda p: jnp.sum(jnp.square(f(p, xs, h0)[1]))  # noqa: E731
    got, want = jax.grad(loss(parallel))(params), jax.grad(loss(recurrent))(params)
    # gradients reach 1e5 where |n·q| < e^{-m}: relative tolerance 1e-3
    assert_trees_close(got, want, atol=1e-4, rtol=1e-3)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def numpy_slstm(params, xs):
    """The sLSTM's equations (sigmoid forget gate) from zeros, in float64:
    ((h, c, n, m), ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    num_heads, size = p["w_hh"].shape[:2]
    hidden = num_heads * size
    xp = np.asarray(xs, np.float64) @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    r = np.zeros((hidden, 4 * hidden))  # the block-diagonal recurrent matrix, gate-major columns
    for j in range(num_heads):
        for g in range(4):
            cols = slice(g * hidden + size * j, g * hidden + size * (j + 1))
            r[size * j : size * (j + 1), cols] = p["w_hh"][j, :, g, :]
    h, c, n, m = (np.zeros((*xs.shape[:-2], hidden)) for _ in range(4))
    ys = []
    for t in range(xs.shape[-2]):
        i_pre, f_pre, z, o = np.split(xp[..., t, :] + h @ r, 4, axis=-1)
        log_f = np.log(_sigmoid(f_pre))
        m_new = np.maximum(log_f + m, i_pre)
        i_gate, f_gate = np.exp(i_pre - m_new), np.exp(log_f + m - m_new)
        c = f_gate * c + i_gate * np.tanh(z)
        n = f_gate * n + i_gate
        h, m = _sigmoid(o) * c / n, m_new
        ys.append(h)
    return (h, c, n, m), np.stack(ys, -2)


def numpy_mlstm(params, xs, num_heads):
    """The mLSTM's recurrent equations (sigmoid forget gate) from zeros, in
    float64, head by head: ((C, n, m) flattened as ``MLSTMCarry``, ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    hidden = (p["w_ih"].shape[1] - 2 * num_heads) // 4
    size = hidden // num_heads
    xp = np.asarray(xs, np.float64) @ p["w_ih"] + p["b_ih"] + p["b_hh"]
    batch = xs.shape[:-2]
    c = np.zeros((*batch, num_heads, size, size))
    n, m = np.zeros((*batch, num_heads, size)), np.zeros((*batch, num_heads))
    ys = []
    for t in range(xs.shape[-2]):
        x = xp[..., t, :]
        q, k, v, o = (x[..., g * hidden : (g + 1) * hidden] for g in range(4))
        i_pre, f_pre = x[..., 4 * hidden : 4 * hidden + num_heads], x[..., 4 * hidden + num_heads :]
        heads = lambda a: a.reshape(*batch, num_heads, size)  # noqa: E731
        q, k, v = heads(q), heads(k) / np.sqrt(size), heads(v)
        log_f = np.log(_sigmoid(f_pre))
        m_new = np.maximum(log_f + m, i_pre)
        i_gate, f_gate = np.exp(i_pre - m_new), np.exp(log_f + m - m_new)
        outer = v[..., :, None] * k[..., None, :]
        c = f_gate[..., None, None] * c + i_gate[..., None, None] * outer
        n = f_gate[..., None] * n + i_gate[..., None] * k
        m = m_new
        num = np.einsum("...vk,...k->...v", c, q)
        den = np.maximum(np.abs(np.sum(n * q, -1)), np.exp(-m))
        ys.append(_sigmoid(o) * (num / den[..., None]).reshape(*batch, hidden))
    carry = (c.reshape(*batch, -1), n.reshape(*batch, -1), m)
    return carry, np.stack(ys, -2)


def test_slstm_matches_numpy(rng):
    cell = rj.cells.slstm(H, num_heads=2)
    params = random_params(cell, rng)
    xs = normal(rng, (2, 5, D))
    (_, _, n, _), want = numpy_slstm(params, xs)
    final, got = rj.unroll(cell, params, xs, impl="scan")
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(final.n, n, atol=2e-5, rtol=1e-5)


def test_mlstm_matches_numpy(rng):
    cell = rj.cells.mlstm(H, num_heads=2)
    params = random_params(cell, rng)
    xs = normal(rng, (2, 5, D))
    want_carry, want = numpy_mlstm(params, xs, num_heads=2)
    final, got = rj.unroll(cell, params, xs, impl="scan")
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)
    assert_trees_close(tuple(final), want_carry, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mlstm", "slstm"])
def test_xlstm_cells_with_masks_and_reverse(name, rng):
    cell = getattr(rj.cells, name)(H, num_heads=3)
    params = random_params(cell, rng)
    xs = normal(rng, (2, 6, D))
    lens = np.array([6, 2])
    final, ys = jax.jit(lambda p, x: rj.unroll(cell, p, x, seq_lengths=lens, reverse=True))(
        params, xs
    )
    assert ys.shape == (2, 6, H) and np.all(np.isfinite(ys))
    assert np.all(np.asarray(ys)[1, 2:] == 0.0)
    short = rj.unroll(cell, params, xs[1:, :2], reverse=True)
    assert_trees_close(
        jax.tree_util.tree_map(lambda a: a[1:], (final, ys[:, :2])), short, atol=2e-5
    )
    assert params["w_ih"].shape[0] == D
