"""hoist=False (projection inside each step) against the hoisted default."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, make, normal

import recurrent_jax as rj

B, T, D = 3, 5, 3
LENGTHS = jnp.array([5, 0, 3])


@pytest.mark.parametrize("name", ["lstm-all", "gru", "gru-before", "mgu", "elman-relu"])
def test_unhoisted_equals_hoisted_values_and_grads(name, key, rng):
    cell, params = make(name, rng)
    xs = normal(rng, (B, T, D))
    weights = normal(rng, (B, T, cell.hidden_size))
    options = dict(seq_lengths=LENGTHS, reverse=True, recurrent_dropout=0.3, key=key)

    def run(p, x, hoist):
        carry, ys = rj.unroll(
            cell, p, x, hoist=hoist, impl="scan" if not hoist else "auto", **options
        )
        return carry, ys, jnp.sum(ys * weights)

    want = run(params, xs, True)
    got = run(params, xs, False)
    assert_trees_close(got, want, atol=1e-5, rtol=1e-5)
    grad = jax.grad(lambda p, x, h: run(p, x, h)[2], argnums=(0, 1))
    assert_trees_close(grad(params, xs, False), grad(params, xs, True), atol=1e-5, rtol=1e-5)


def test_unhoisted_needs_the_plain_scan(key, rng):
    cell, params = make("lstm", rng)
    with pytest.raises(ValueError, match="hoist"):
        rj.unroll(cell, params, np.zeros((B, T, D), np.float32), hoist=False, impl="fused")
