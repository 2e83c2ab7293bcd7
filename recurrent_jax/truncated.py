"""Truncated backpropagation through time over long sequences."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells.base import CARRY_DTYPE, Cell, with_defaults
from recurrent_jax.sequence import unroll, valid_steps


def truncated_unroll(
    cell: Cell,
    params,
    xs,
    *,
    chunk_length: int,
    initial_carry=None,
    seq_lengths=None,
    mask=None,
    resets=None,
    key=None,
    **unroll_options,
):
    """``rj.unroll`` in chunks of ``chunk_length`` steps, the carry passed from
    chunk to chunk with its gradient stopped at every chunk boundary.

    The forward values equal one ``rj.unroll`` over the whole sequence; the
    gradient of the loss on chunk k reaches only the steps of chunk k (and
    ``initial_carry`` through the first chunk). Regulariser masks are drawn
    per chunk. T need not be a multiple of ``chunk_length``.

    Args:
      xs: (B..., T, D), batch-major.
      chunk_length: steps per chunk (the truncation length).
      initial_carry, seq_lengths, mask, resets, key, **unroll_options: as
        ``rj.unroll`` (``reverse`` and ``time_major`` are not supported).

    Returns:
      ``(final_carry, ys)`` as ``rj.unroll``.
    """
    for name in ("reverse", "time_major", "return_carries"):
        if unroll_options.get(name):
            raise ValueError(f"{name}: not supported by truncated_unroll, got True")
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
        raise ValueError(f"chunk_length: expected a positive int, got {chunk_length!r}")
    _checks.check_inputs(xs, None, time_major=False)
    num_steps, batch = xs.shape[-2], xs.shape[:-2]
    num_chunks = -(-num_steps // chunk_length)
    valid = valid_steps(seq_lengths, mask, batch, num_steps, time_major=False)
    valid = None if valid is None else jnp.moveaxis(valid, 0, -1)  # (B..., T)
    if resets is not None:
        resets = _checks.check_mask("resets", resets, (*batch, num_steps))

    padded = num_chunks * chunk_length
    if valid is None and padded != num_steps:
        valid = jnp.ones((*batch, num_steps), bool)
    chunks = {
        "xs": _chunk(xs, padded, chunk_length, feature_axis=True),
        "mask": None if valid is None else _chunk(valid, padded, chunk_length),
        "resets": None if resets is None else _chunk(resets, padded, chunk_length),
        "key": None if key is None else jax.random.split(key, num_chunks),
        "first": jnp.arange(num_chunks) == 0,
    }

    def body(carry, chunk):
        carry = jax.tree_util.tree_map(
            lambda c: jnp.where(chunk["first"], c, jax.lax.stop_gradient(c)), carry
        )
        return unroll(
            cell,
            params,
            chunk["xs"],
            initial_carry=carry,
            mask=chunk["mask"],
            resets=chunk["resets"],
            reset_carry=None if resets is None else start,
            key=chunk["key"],
            **unroll_options,
        )

    if initial_carry is None:  # the outer scan needs the carry's structure
        initial_carry = with_defaults(cell).initial_carry(batch, CARRY_DTYPE)
    start = initial_carry  # where resets restart, in every chunk
    final, ys = jax.lax.scan(body, initial_carry, chunks)
    ys = jnp.moveaxis(ys, 0, -3).reshape(*batch, padded, ys.shape[-1])
    return final, ys[..., :num_steps, :]


def _chunk(a, padded, chunk_length, feature_axis=False):
    """(B..., T[, F]) -> (N, B..., c[, F]), padding T up to N·c."""
    time_axis = a.ndim - 2 if feature_axis else a.ndim - 1
    pad = [(0, 0)] * a.ndim
    pad[time_axis] = (0, padded - a.shape[time_axis])
    a = jnp.pad(a, pad)
    shape = (*a.shape[:time_axis], padded // chunk_length, chunk_length, *a.shape[time_axis + 1 :])
    return jnp.moveaxis(a.reshape(shape), time_axis, 0)
