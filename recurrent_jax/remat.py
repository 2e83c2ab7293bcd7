"""Rematerialisation over time: bounded activation memory for long sequences.

A training step through a scan stores every step's residuals (carries, gate
values, the projected inputs) for the backward pass: O(T) memory. With
``unroll(..., remat=k)`` the sequence runs as T/k segments of k steps under
``jax.checkpoint``: the forward keeps only the carry at each segment
boundary, and the backward recomputes one segment at a time (its input
projection included), so activation memory is O(T/k + k) carries at the
price of one extra forward pass. k ≈ √T minimises it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from recurrent_jax._step import StepInputs

tree_map = jax.tree_util.tree_map


def segmented(run, carry0, inputs: StepInputs, length: int, batch_shape: tuple):
    """``run(carry, inputs) -> (carry, ys, carries)`` over segments of
    ``length`` steps, each rematerialised in the backward pass.

    ``inputs`` is time-major (T, B..., ·), ``batch_shape`` its B...; T is padded up to a multiple of
    ``length`` with invalid steps, which keep the carry, and the padding is
    cut from the outputs.
    """
    num_steps = inputs.xp.shape[0]
    pad = -num_steps % length
    if pad:
        inputs = _pad_invalid(inputs, pad, batch_shape)
    segments = tree_map(lambda a: a.reshape(-1, length, *a.shape[1:]), inputs)

    # prevent_cse=False: inside a scan, CSE cannot merge the recomputation
    # with the forward (the JAX docs' advice for checkpoint under scan).
    @functools.partial(jax.checkpoint, prevent_cse=False)
    def segment(carry, seg):
        carry, ys, carries = run(carry, seg)
        return carry, (ys, carries)

    final, outs = jax.lax.scan(segment, carry0, segments)
    outs = tree_map(lambda a: a.reshape(-1, *a.shape[2:])[:num_steps], outs)
    return (final, *outs)


def _pad_invalid(inputs: StepInputs, pad: int, batch_shape: tuple) -> StepInputs:
    if inputs.valid is None:
        inputs = inputs._replace(valid=jnp.ones((inputs.xp.shape[0], *batch_shape), bool))
    widths = lambda a: [(0, pad)] + [(0, 0)] * (a.ndim - 1)  # noqa: E731
    return tree_map(lambda a: jnp.pad(a, widths(a)), inputs)
