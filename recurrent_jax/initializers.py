"""Initialisers that stay safe under ``jax.vmap`` on CPU.

``orthogonal`` draws exactly what ``jax.nn.initializers.orthogonal`` draws
for a key. Only its batching differs: vmapped over keys (a sweep's stacked
runs, ``jax.vmap(model.init)``), it draws one matrix after another under
``lax.map`` instead of one batched QR. On CPU, jaxlib runs a batched QR
(LAPACK ``geqrf``) by splitting the batch over XLA's thread pool and
waiting for it; two such QRs that XLA schedules at once (an LSTM's four
gate blocks, two layers) can occupy every thread of a small pool while
each waits for the other's work, and the program never finishes (seen on
2-core machines with jaxlib 0.10). Init runs once, so drawing the runs in
turn costs nothing that matters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def orthogonal(scale: float = 1.0, column_axis: int = -1, dtype=jnp.float32):
    """``jax.nn.initializers.orthogonal`` with a sequential batching rule:
    ``init(key, shape, dtype)`` -> an array whose rows or columns
    (``column_axis``) are orthonormal, times ``scale``."""
    draw_one = jax.nn.initializers.orthogonal(scale, column_axis, dtype)

    def init(key, shape, dtype=dtype):
        @jax.custom_batching.custom_vmap
        def draw(key):
            return draw_one(key, shape, dtype)

        @draw.def_vmap
        def _draw_batched(axis_size, in_batched, key):
            del axis_size, in_batched  # only the key is an argument, and it is batched
            return jax.lax.map(draw, key), True

        return draw(key)

    return init
