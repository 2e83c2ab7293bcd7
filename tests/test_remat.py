"""``unroll(..., remat=k)``: the same values and gradients as without, and
less activation memory (XLA's compiled temp allocation)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import H, assert_trees_close, make, normal, random_carry

import recurrent_jax as rj

TOL = dict(atol=1e-5, rtol=1e-5)  # fp32; only the association of sums moves

CASES = {
    # T = 7 is not a multiple of 3: the last segment is padded.
    "lengths": dict(batch=(2, 3), options=dict(seq_lengths=np.array([[7, 0, 2], [5, 7, 1]]))),
    "reverse-mask": dict(
        batch=(3,), options=dict(mask=np.arange(7) < np.array([7, 4, 6])[:, None], reverse=True)
    ),
    "regularisers": dict(
        batch=(3,),
        options=dict(
            seq_lengths=np.array([7, 3, 6]),
            dropout=0.2,
            recurrent_dropout=0.3,
            zoneout=0.25,
            key=jax.random.PRNGKey(4),
        ),
    ),
}


def build(name, rng):
    if name == "mingru":  # linear in the carry: for the parallel impls
        cell = rj.cells.mingru(H)
        return cell, cell.init(jax.random.PRNGKey(int(rng.integers(1 << 30))), 3)
    return make(name, rng)


def run_both(name, impl, case, rng, remat, **extra):
    cell, params = build(name, rng)
    xs = normal(rng, (*case["batch"], 7, 3))
    carry0 = random_carry(cell, rng, case["batch"])
    options = case["options"] | extra

    def loss(p, x, c, k):
        out = rj.unroll(cell, p, x, initial_carry=c, impl=impl, remat=k, **options)
        final, ys = out[0], out[1]
        terms = [jnp.sum(jnp.sin(ys))] + [jnp.sum(leaf**2) for leaf in jax.tree.leaves(final)]
        return sum(terms), out

    grad = jax.grad(loss, argnums=(0, 1, 2), has_aux=True)
    want = jax.jit(grad, static_argnums=3)(params, xs, carry0, None)
    got = jax.jit(grad, static_argnums=3)(params, xs, carry0, remat)
    return got, want


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("name, impl", [("lstm", "fused"), ("gru", "scan"), ("mingru", "chunked")])
def test_remat_equals_plain(name, impl, case, rng):
    got, want = run_both(name, impl, CASES[case], rng, remat=3)
    assert_trees_close(got, want, **TOL)


def test_remat_with_return_carries_and_long_segments(rng):
    got, want = run_both("lstm", "scan", CASES["lengths"], rng, remat=50, return_carries=True)
    assert_trees_close(got, want, **TOL)


def temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("impl", ["scan", "fused"])
def test_remat_bounds_activation_memory(impl, rng):
    """T = 1024: √T segments store ~2√T steps instead of T (expect ≈ 16× less;
    asserted: at least 4× less)."""
    cell = rj.cells.lstm(32)
    params = cell.init(jax.random.PRNGKey(0), 16)
    xs = jnp.asarray(normal(rng, (4, 1024, 16)))

    def grad(remat):
        loss = lambda p, x: jnp.sum(rj.unroll(cell, p, x, impl=impl, remat=remat)[1] ** 2)
        return jax.grad(loss, argnums=(0, 1))

    plain, segmented = temp_bytes(grad(None), params, xs), temp_bytes(grad(32), params, xs)
    assert segmented * 4 < plain, (segmented, plain)


@pytest.mark.parametrize("remat", [0, -2, 2.0, True, "8"])
def test_bad_remat(remat, rng):
    cell, params = make("lstm", rng)
    with pytest.raises(ValueError, match="remat: expected None or a positive int"):
        rj.unroll(cell, params, jnp.ones((2, 4, 3)), remat=remat)
