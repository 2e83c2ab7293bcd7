"""impl="deer" (Newton over the whole trajectory) against the sequential scan.

Tolerances (fp32): values atol 1e-5, gradients atol 1e-4 + rtol 1e-4.
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import D, assert_trees_close, normal, random_carry

import recurrent_jax as rj
from recurrent_jax import deer

H = 4
BATCH = (2, 3)
T = 7
LENGTHS = np.array([[7, 3, 0], [5, 1, 6]])
CELLS = {
    "gru": lambda: rj.cells.gru(H),
    "lstm": lambda: rj.cells.lstm(H),
    "elman": lambda: rj.cells.elman(H),
    "mgu": lambda: rj.cells.mgu(H),
    "slstm": lambda: rj.cells.slstm(H, num_heads=2),
}


def _contracting_params(cell, rng, scale=0.3):
    shapes = jax.eval_shape(lambda k: cell.init(k, D), jax.random.PRNGKey(0))
    return jax.tree_util.tree_map(lambda s: normal(rng, s.shape, scale), shapes)


def _run(cell, impl, **kw):
    @jax.jit
    def run(params, xs, h0):
        def loss(params, xs, h0):
            final, ys = rj.unroll(
                cell,
                params,
                xs,
                initial_carry=h0,
                seq_lengths=jnp.asarray(LENGTHS),
                reverse=True,
                impl=impl,
                **kw,
            )
            leaves = jax.tree_util.tree_leaves(final)
            return jnp.sum(jnp.square(ys)) + sum(jnp.sum(c) for c in leaves), (final, ys)

        return jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(params, xs, h0)

    return run


@pytest.mark.parametrize(
    ("name", "quasi"), [("gru", False), ("gru", True), ("lstm", False), ("slstm", True)]
)
def test_deer_equals_scan_values_and_grads(name, quasi, rng):
    cell = CELLS[name]()
    params = _contracting_params(cell, rng)
    xs, h0 = normal(rng, (*BATCH, T, D)), random_carry(cell, rng, BATCH)
    want_g, want = _run(cell, "scan")(params, xs, h0)
    got_g, got = _run(cell, "deer", deer_quasi=quasi, deer_tol=1e-6)(params, xs, h0)
    assert_trees_close(got, want, atol=1e-5)
    assert_trees_close(got_g, want_g, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", ["elman", "mgu"])
def test_deer_values_other_cells(name, rng):
    cell = CELLS[name]()
    params = _contracting_params(cell, rng)
    xs, h0 = normal(rng, (*BATCH, T, D)), random_carry(cell, rng, BATCH)
    kw = dict(initial_carry=h0, seq_lengths=jnp.asarray(LENGTHS), return_carries=True)
    want = rj.unroll(cell, params, xs, impl="scan", **kw)
    assert_trees_close(rj.unroll(cell, params, xs, impl="deer", **kw), want, atol=1e-5)


def test_deer_converges_on_contracting_gru(rng):
    cell = rj.cells.gru(8)
    params = _contracting_params(cell, rng, scale=0.2)
    xs = normal(rng, (2, 128, D))
    carries, info = jax.jit(lambda p, x: deer.trajectory(cell, p, x, tol=1e-6))(params, xs)
    assert bool(info.converged) and int(info.iterations) <= 12
    _, want = rj.unroll(cell, params, xs, impl="scan", return_carries=True)[::2]
    np.testing.assert_allclose(jnp.moveaxis(carries, 0, -2), want, atol=1e-5)
    quasi_info = deer.trajectory(cell, params, xs, tol=1e-6, quasi=True)[1]
    assert bool(quasi_info.converged) and int(quasi_info.iterations) < 128


def test_deer_falls_back_with_a_warning(rng):
    cell = rj.cells.gru(H)
    params = _contracting_params(cell, rng, scale=1.5)
    xs = normal(rng, (2, 16, D), scale=2.0)
    want = rj.unroll(cell, params, xs, impl="scan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = rj.unroll(cell, params, xs, impl="deer", deer_max_iters=1)
        jax.effects_barrier()
    assert any("did not converge" in str(w.message) for w in caught)
    assert_trees_close(got, want, atol=1e-6)
