"""``rj.initializers.orthogonal``: the draws of ``jax.nn.initializers.orthogonal``,
and a vmapped init that finishes on a small CPU thread pool."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

import recurrent_jax as rj
from recurrent_jax import initializers


@pytest.mark.parametrize(
    "shape, column_axis, scale", [((6, 6), -1, 1.0), ((4, 9), -1, 2.0), ((9, 4), 0, 0.5)]
)
def test_orthogonal_draws_what_jax_draws(shape, column_axis, scale):
    key = jax.random.key(7)
    ours = initializers.orthogonal(scale, column_axis)(key, shape)
    theirs = jax.nn.initializers.orthogonal(scale, column_axis)(key, shape)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    w = np.asarray(ours, np.float64) / scale
    w = w if column_axis == -1 else w.T
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    np.testing.assert_allclose(gram, np.eye(min(w.shape)), atol=1e-5)


def test_orthogonal_under_vmap_equals_one_draw_per_key():
    init = initializers.orthogonal()
    keys = jax.random.split(jax.random.key(0), 6)
    batched = jax.jit(jax.vmap(lambda k: init(k, (5, 8))))(keys)
    nested = jax.vmap(jax.vmap(lambda k: init(k, (5, 8))))(keys.reshape(2, 3))
    for i, key in enumerate(keys):
        one = jax.nn.initializers.orthogonal()(key, (5, 8))
        np.testing.assert_array_equal(np.asarray(batched[i]), np.asarray(one))
        np.testing.assert_array_equal(np.asarray(nested[i // 3, i % 3]), np.asarray(one))


def test_vmapped_lstm_init_finishes():
    """Batched QRs that XLA runs at once used to deadlock jaxlib's CPU
    thread pool on 2-core machines; the init now draws run by run."""
    script = textwrap.dedent(
        """
        import jax
        import recurrent_jax as rj
        layer = rj.stack([rj.layer(rj.cells.lstm(64)), rj.layer(rj.cells.lstm(64))])
        init = jax.jit(jax.vmap(lambda k: layer.init(k, 32)))
        keys = jax.random.split(jax.random.key(0), 8)
        for i in range(5):
            jax.block_until_ready(init(keys))
        print("finished")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "finished" in done.stdout


def test_cells_draw_their_recurrent_blocks_run_by_run():
    keys = jax.random.split(jax.random.key(1), 2)
    init = jax.vmap(lambda k: rj.cells.lstm(3).init(k, 2))
    assert "scan" in str(jax.make_jaxpr(init)(keys))  # lax.map, not a batched QR
    block = init(keys)["w_hh"][1][:, :3]
    np.testing.assert_allclose(np.asarray(block @ block.T), np.eye(3), atol=1e-5)
