"""``impl="cudnn"``: cuDNN's LSTM kernel against the plain scan (GPU), and
its limits as clear errors (everywhere)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import assert_trees_close, make, normal, random_carry

import recurrent_jax as rj

on_gpu = jax.default_backend() == "gpu"
gpu_only = pytest.mark.skipif(not on_gpu, reason="cuDNN's kernel needs a CUDA GPU")


def test_cells_declare_their_kernel():
    assert rj.cells.lstm(4).cudnn_kernel == "lstm"
    assert rj.cells.lstm(4, bias="single").cudnn_kernel == "lstm"
    for cell in (
        rj.cells.lstm(4, peephole=True),
        rj.cells.lstm(4, proj_size=2),
        rj.cells.lstm(4, layer_norm=True),
        rj.cells.lstm(4, activation=jax.nn.relu),
        rj.cells.lstm(4, dtype=jnp.bfloat16),
        rj.cells.gru(4, reset_after=False),
        rj.cells.gru(4, dtype=jnp.bfloat16),
    ):
        assert cell.cudnn_kernel is None, cell
    # a plain GRU names its recurrence (the CPU backend's), which cuDNN's
    # LSTM-only path then refuses
    assert rj.cells.gru(4).cudnn_kernel == "gru"


@pytest.mark.skipif(on_gpu, reason="checks the message off GPU")
def test_off_gpu_says_why(rng):
    cell, params = make("lstm", rng)
    with pytest.raises(ValueError, match="impl: 'cudnn' cannot be used here: it needs a CUDA GPU"):
        rj.unroll(cell, params, jnp.ones((2, 5, 3)), impl="cudnn")


@pytest.mark.parametrize(
    "name, options, reason",
    [
        ("lstm-peephole", {}, "the lstm cell has no cuDNN kernel"),
        ("gru", {}, "the gru cell has no cuDNN kernel"),
        ("lstm", dict(mask=np.ones((2, 5), bool)), "`mask` is set"),
        ("lstm", dict(reverse=True), "`reverse` is set"),
        ("lstm", dict(return_carries=True), "`return_carries` is set"),
        ("lstm", dict(zoneout=0.1, deterministic=True), "`zoneout` is set"),
        ("lstm", dict(remat=2), "`remat` is set"),
    ],
)
def test_limits_are_named(name, options, reason, rng):
    cell, params = make(name, rng)
    with pytest.raises(ValueError, match=reason):
        rj.unroll(cell, params, jnp.ones((2, 5, 3)), impl="cudnn", **options)


def test_auto_never_picks_cudnn(rng):
    """auto must stay vmappable: a vmapped plain LSTM runs wherever it is."""
    cell, params = make("lstm", rng)
    xs = jnp.asarray(normal(rng, (3, 2, 5, 3)))
    ys = jax.vmap(lambda x: rj.unroll(cell, params, x)[1])(xs)
    assert ys.shape == (3, 2, 5, 4)


@gpu_only
@pytest.mark.parametrize("bias", ["double", "single", "none"])
def test_cudnn_equals_scan_values_and_gradients(bias, rng):
    """Two batch dims, lengths 0..T, a random initial carry, input dropout;
    at HIGHEST precision both sides are fp32 (no TF32): atol 1e-4."""
    cell, params = make("lstm", rng, bias=bias)
    xs = jnp.asarray(normal(rng, (2, 3, 9, 3)))
    lengths = jnp.array([[9, 0, 4], [1, 9, 6]])
    carry0 = random_carry(cell, rng, (2, 3))

    def loss(p, x, c, impl):
        final, ys = rj.unroll(
            cell,
            p,
            x,
            initial_carry=c,
            seq_lengths=lengths,
            impl=impl,
            dropout=0.2,
            key=jax.random.PRNGKey(3),
        )
        return jnp.sum(jnp.sin(ys)) + jnp.sum(final.h * final.c), (final, ys)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True), static_argnums=3)
    with jax.default_matmul_precision("highest"):
        got, want = grad(params, xs, carry0, "cudnn"), grad(params, xs, carry0, "scan")
    assert_trees_close(got, want, atol=1e-4, rtol=1e-4)


@gpu_only
def test_cudnn_under_vmap_fails_loudly(rng):
    cell, params = make("lstm", rng)
    xs = jnp.ones((2, 3, 5, 3))
    with pytest.raises(NotImplementedError):
        jax.vmap(lambda x: rj.unroll(cell, params, x, impl="cudnn")[1])(xs)
