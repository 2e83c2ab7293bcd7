"""Truncated backpropagation through time over long sequences."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells.base import Cell, carry_dtype_of, with_defaults
from recurrent_jax.sequence import unroll, valid_steps


def truncated_unroll(
    cell: Cell,
    params,
    xs,
    *,
    truncation_length: int,
    initial_carry=None,
    seq_lengths=None,
    mask=None,
    resets=None,
    key=None,
    **unroll_options,
):
    """``rj.unroll`` in windows of ``truncation_length`` steps, the carry
    passed from window to window with its gradient stopped at every window
    boundary.

    The forward values equal one ``rj.unroll`` over the whole sequence; the
    gradient of the loss on window k reaches only the steps of window k (and
    ``initial_carry`` through the first window). Regulariser masks are drawn
    per window. T need not be a multiple of ``truncation_length``.

    Args:
      xs: (B..., T, D), batch-major.
      truncation_length: steps per window, k in TBPTT(k).
      initial_carry, seq_lengths, mask, resets, key, **unroll_options: as
        ``rj.unroll`` (``reverse`` and ``time_major`` are not supported).

    Returns:
      ``(final_carry, ys)`` as ``rj.unroll``.
    """
    length = _checks.check_positive_int("truncation_length", truncation_length)
    if cell.spatial_dims:  # its windows would cut a spatial axis, not time
        raise ValueError(
            f"cell: truncated_unroll needs a cell without spatial axes, got {cell.name} "
            f"with {cell.spatial_dims}"
        )
    for name in ("reverse", "time_major", "return_carries"):
        if unroll_options.get(name):
            raise ValueError(f"{name}: not supported by truncated_unroll, got True")
    _checks.check_inputs(xs, None, time_major=False)
    num_steps, batch = xs.shape[-2], xs.shape[:-2]
    num_windows = -(-num_steps // length)
    valid = valid_steps(seq_lengths, mask, batch, num_steps, time_major=False)
    valid = None if valid is None else jnp.moveaxis(valid, 0, -1)  # (B..., T)
    if resets is not None:
        resets = _checks.check_mask("resets", resets, (*batch, num_steps))

    padded = num_windows * length
    if valid is None and padded != num_steps:
        valid = jnp.ones((*batch, num_steps), bool)
    windows = {
        "xs": _windows(xs, padded, length, feature_axis=True),
        "mask": None if valid is None else _windows(valid, padded, length),
        "resets": None if resets is None else _windows(resets, padded, length),
        "key": None if key is None else jax.random.split(key, num_windows),
        "first": jnp.arange(num_windows) == 0,
    }

    def body(carry, window):
        carry = jax.tree_util.tree_map(
            lambda c: jnp.where(window["first"], c, jax.lax.stop_gradient(c)), carry
        )
        return unroll(
            cell,
            params,
            window["xs"],
            initial_carry=carry,
            mask=window["mask"],
            resets=window["resets"],
            reset_carry=None if resets is None else start,
            key=window["key"],
            **unroll_options,
        )

    if initial_carry is None:  # the outer scan needs the carry's structure
        initial_carry = with_defaults(cell).initial_carry(batch, carry_dtype_of(cell, params))
    start = initial_carry  # where resets restart, in every window
    final, ys = jax.lax.scan(body, initial_carry, windows)
    ys = jnp.moveaxis(ys, 0, -3).reshape(*batch, padded, ys.shape[-1])
    return final, ys[..., :num_steps, :]


def _windows(a, padded, length, feature_axis=False):
    """(B..., T[, F]) -> (N, B..., k[, F]), padding T up to N·k."""
    time_axis = a.ndim - 2 if feature_axis else a.ndim - 1
    pad = [(0, 0)] * a.ndim
    pad[time_axis] = (0, padded - a.shape[time_axis])
    a = jnp.pad(a, pad)
    shape = (*a.shape[:time_axis], padded // length, length, *a.shape[time_axis + 1 :])
    return jnp.moveaxis(a.reshape(shape), time_axis, 0)
