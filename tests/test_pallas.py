"""``impl="pallas"``, the persistent recurrent kernel, against the plain scan
(values, final carries, gradients) in Pallas interpret mode on CPU; natively
on a GPU, with a race check (identical results over repeated runs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import CELLS, assert_trees_close, normal, random_carry, random_params

import recurrent_jax as rj

B, T, D = 3, 7, 3
LENGTHS = np.array([7, 0, 3])
ON_GPU = jax.default_backend() == "gpu"
# fp32: the kernel and the scan round alike but order sums differently. On a
# GPU both take fp32 dots at default precision as TF32 (10-bit mantissas),
# each in its own blocking, so they agree to TF32's rounding only.
VALUES = dict(atol=2e-3, rtol=2e-3) if ON_GPU else dict(atol=1e-5, rtol=1e-5)
GRADS = dict(atol=5e-3, rtol=5e-3) if ON_GPU else dict(atol=2e-5, rtol=2e-5)
HIDDEN = 16  # the smallest width Triton takes (the zoo's H = 4 is for interpret mode only)
KERNEL_CELLS = {
    "lstm": lambda **o: rj.cells.lstm(HIDDEN, **o),
    "lstm-all": CELLS["lstm-all"],  # peepholes, projection, layer norm: interpret mode only
    "gru": lambda **o: rj.cells.gru(HIDDEN, **o),  # 3H gates: interpret mode only
    "elman-tanh": lambda **o: rj.cells.elman(HIDDEN, **o),
    "mgu": CELLS["mgu"],
}
NOT_ON_GPU = {"lstm-all", "gru"}  # refused on a GPU (pallas.gpu_blockers, tests/test_lowering.py)


def make(name, rng, **options):
    if ON_GPU and name in NOT_ON_GPU:
        pytest.skip(f"{name}: the Triton kernel refuses it (see tests/test_lowering.py)")
    cell = KERNEL_CELLS[name](**options)
    return cell, random_params(cell, rng, D)


def run_both(name, rng, *, reverse=False, lengths=LENGTHS, batch=(B,), **cell_options):
    cell, params = make(name, rng, **cell_options)
    xs = normal(rng, (*batch, T, D))
    carry0 = random_carry(cell, rng, batch)
    kw = dict(initial_carry=carry0, reverse=reverse, seq_lengths=lengths)

    def outputs(impl):
        def f(p, x):
            return rj.unroll(cell, p, x, impl=impl, **kw)

        def loss(p, x):
            return sum(jnp.sum(jnp.sin(a)) for a in jax.tree_util.tree_leaves(f(p, x)))

        return jax.jit(f)(params, xs), jax.jit(jax.grad(loss, argnums=(0, 1)))(params, xs)

    return outputs("pallas"), outputs("scan")


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", ["lstm", "lstm-all", "gru", "elman-tanh"])
def test_kernel_equals_the_scan(name, reverse, rng):
    (values, grads), (want_values, want_grads) = run_both(name, rng, reverse=reverse)
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **GRADS)
    carry, ys = values
    np.testing.assert_array_equal(np.asarray(ys)[1], 0.0)  # length 0: zero outputs


def test_two_batch_dims_without_padding(rng):
    (values, grads), (want_values, want_grads) = run_both(
        "lstm", rng, lengths=None, batch=(2, 20)
    )  # 40 rows: three batch tiles, the last padded
    assert_trees_close(values, want_values, **VALUES)
    assert_trees_close(grads, want_grads, **GRADS)


def test_bf16_compute(rng):
    """bf16 matmuls, fp32 carries: the kernel and the scan round the same
    products, so they agree far inside bf16's own error."""
    (values, grads), (want_values, want_grads) = run_both("lstm", rng, dtype=jnp.bfloat16)
    assert_trees_close(values, want_values, atol=1e-3, rtol=1e-3)
    assert_trees_close(grads, want_grads, atol=1e-2, rtol=1e-2)


def test_vmap_over_runs_with_their_own_weights(rng):
    """A sweep: runs with different weights under jax.vmap (the run axis
    becomes a grid axis of the kernel) equal each run alone."""
    cell, _ = make("lstm", rng)
    runs = [make("lstm", rng)[1] for _ in range(3)]
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *runs)
    xs = normal(rng, (B, T, D))

    def loss(p, impl):
        _, ys = rj.unroll(cell, p, xs, seq_lengths=LENGTHS, impl=impl)
        return jnp.sum(jnp.sin(ys))

    got = jax.jit(jax.vmap(jax.value_and_grad(lambda p: loss(p, "pallas"))))(stacked)
    for i, params in enumerate(runs):
        want = jax.jit(jax.value_and_grad(lambda p: loss(p, "scan")))(params)
        assert_trees_close(jax.tree_util.tree_map(lambda a, i=i: a[i], got), want, **GRADS)


def test_remat_segments_run_the_kernel(rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))

    def loss(p, **kw):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, xs, seq_lengths=LENGTHS, **kw)[1]))

    got = jax.jit(jax.grad(lambda p: loss(p, impl="pallas", remat=3)))(params)
    want = jax.jit(jax.grad(lambda p: loss(p, impl="scan")))(params)
    assert_trees_close(got, want, **GRADS)


def test_auto_never_picks_the_kernel_and_blockers_are_listed(rng):
    cell, params = make("lstm", rng)
    xs = normal(rng, (B, T, D))
    text = jax.jit(lambda p: rj.unroll(cell, p, xs)[1]).lower(params).as_text(debug_info=True)
    assert "recurrent_jax.pallas" not in text
    mgu, mgu_params = make("mgu", rng)
    with pytest.raises(ValueError, match="impl: 'pallas' cannot be used here: the mgu cell"):
        rj.unroll(mgu, mgu_params, xs, impl="pallas")
    resets = np.zeros((B, T), bool)
    with pytest.raises(ValueError) as info:
        rj.unroll(
            cell, params, xs, impl="pallas", resets=resets, zoneout=0.1, deterministic=True,
            return_carries=True,
        )  # fmt: skip
    for reason in ("`resets` is set", "`zoneout` is set", "`return_carries` is set"):
        assert reason in str(info.value)


@pytest.mark.skipif(not ON_GPU, reason="the native kernel needs a CUDA GPU")
def test_native_kernel_is_deterministic(rng):
    """No races: repeated runs give identical results, bit for bit."""
    cell, params = make("lstm", rng)
    xs = normal(rng, (64, 128, D))
    f = jax.jit(lambda p: rj.unroll(cell, p, xs, impl="pallas")[1])
    first = np.asarray(f(params))
    for _ in range(5):
        np.testing.assert_array_equal(np.asarray(f(params)), first)
