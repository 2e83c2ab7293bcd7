"""Mixed precision: bf16 matmuls with fp32 carries and gate sums, against
the fp32 computation at full precision. The documented error (README,
benchmarks/RESULTS.md) is ~3e-3 relative for outputs and weight gradients,
flat in T because the carries stay fp32; asserted here: < 1e-2, and no
growth with T beyond 2×."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest

import recurrent_jax as rj


def relative_error(got, want):
    return float(jnp.linalg.norm((got - want).ravel()) / jnp.linalg.norm(want.ravel()))


def errors(name, steps):
    cell32 = getattr(rj.cells, name)(32)
    cell16 = getattr(rj.cells, name)(32, dtype=jnp.bfloat16)
    params = cell32.init(jax.random.PRNGKey(0), 16)
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, steps, 16))

    def outputs_and_grads(cell):
        loss = lambda p: jnp.mean(jnp.square(rj.unroll(cell, p, xs)[1]))  # noqa: E731
        return rj.unroll(cell, params, xs)[1], jax.grad(loss)(params)

    with jax.default_matmul_precision("highest"):
        ys32, g32 = jax.jit(lambda: outputs_and_grads(cell32))()
    ys16, g16 = jax.jit(lambda: outputs_and_grads(cell16))()
    assert ys16.dtype == jnp.float32
    grads = [relative_error(g16[k], g32[k]) for k in ("w_ih", "w_hh")]
    return relative_error(ys16, ys32), max(grads)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_bf16_error_is_small_and_flat_in_time(name):
    short, long = errors(name, 16), errors(name, 128)
    for value in (*short, *long):
        assert 1e-4 < value < 1e-2  # the matmuls did run in bf16, and stay close
    assert long[0] < 2 * short[0] and long[1] < 2 * short[1], (short, long)
