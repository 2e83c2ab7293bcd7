r"""A short causal convolution over time that keeps the engine's contract.

Mamba's block convolves each channel over its last K inputs (K = 4) before
the SSM. As a recurrence in the engine's sense, that convolution carries the
window of the K − 1 inputs before the current one:

.. math::  u_t = b + \sum_{k=0}^{K-1} w_{K-1-k} ⊙ x_{t-k}

where x_{t−k} is the k-th valid input before x_t *in processing order* and
the window starts as ``window0``. So a padded step keeps the window (a valid
step reads the K − 1 previous valid inputs, skipping holes in a mask), a
reset restarts it from ``window0`` before reading x_t (the sequences of a
packed row), the reverse direction reads the valid part backwards (its
window holds the inputs that follow), and the window after the last valid
step is the final carry. ``causal_conv`` computes every step at once: the
valid steps of each row are moved to the front (a stable sort, skipped when
they are already there), laid after ``window0`` in one history, and each lag
is a gather from it, redirected into ``window0`` before a restart.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class History(NamedTuple):
    """The inputs a window reads, per row.

    Attributes:
      values: (K−1+T, B..., E): ``window0``, then the valid inputs in
        processing order (the invalid ones after them).
      starts: (T, B...) int32, the position among the valid inputs where
        each one's sequence (re)started, or None when no row restarts.
      num_lags: K − 1.
    """

    values: jax.Array
    starts: jax.Array | None
    num_lags: int


def causal_conv(xs, kernel, bias, window0, *, valid=None, resets=None, prefix=False):
    """The convolution at every step of ``xs``, and the history it read.

    Args:
      xs: (T, B..., E) inputs, time-major, in processing order.
      kernel: (K, E); ``kernel[K-1]`` multiplies the current input
        (PyTorch's ``Conv1d`` weight (E, 1, K), transposed).
      bias: (E,) or None.
      window0: (B..., K−1, E) the inputs before the first step, oldest first.
      valid: (T, B...) bool, or None (every step valid).
      resets: (T, B...) bool, or None: at a valid step, the window restarts
        from ``window0`` before reading it.
      prefix: the valid steps of every row already come first (lengths,
        packed rows), so no reordering is needed.

    Returns:
      ``(us, history)``: us (T, B..., E), fp32 or wider, the convolution at
      every valid step (unspecified at the others); ``history`` for
      ``window_after``.
    """
    dtype = jnp.result_type(jnp.float32, xs.dtype)
    order = None if valid is None or prefix else jnp.argsort(~valid, axis=0, stable=True)
    if order is not None:
        xs = jnp.take_along_axis(xs, order[..., None], axis=0)
    if resets is not None:
        resets = resets if valid is None else resets & valid
        resets = resets if order is None else jnp.take_along_axis(resets, order, axis=0)
    history = _history(xs.astype(dtype), window0.astype(dtype), resets)
    steps = jnp.arange(xs.shape[0]).reshape(-1, *(1,) * (xs.ndim - 2))
    terms = [
        _all_steps_lag(history, steps, k) * _lift(kernel[history.num_lags - k].astype(dtype), xs)
        for k in range(history.num_lags + 1)
    ]
    us = sum(terms[1:], terms[0])
    if bias is not None:
        us = us + _lift(bias.astype(dtype), us)
    if order is not None:
        us = jnp.take_along_axis(us, _positions(valid)[..., None], axis=0)
    return us, history


def window_after(history: History, steps, rows=None):
    """The window after valid input ``steps`` (B...) of each row (−1:
    before any, giving ``window0``), (B..., K−1, E) oldest first; with
    ``rows`` (N,), of row ``rows[n]`` after its input ``steps[n]``,
    (N, K−1, E)."""
    lags = [_lag(history, steps[None], k, rows)[0] for k in reversed(range(history.num_lags))]
    return jnp.stack(lags, axis=-2)


def valid_count(valid, num_steps, batch_shape):
    """(B...) int32 valid steps per row of a (T, B...) mask (None: all T)."""
    if valid is None:
        return jnp.full(batch_shape, num_steps, jnp.int32)
    return valid.sum(0).astype(jnp.int32)


def _history(xs, window0, resets) -> History:
    num_lags = window0.shape[-2]
    values = jnp.concatenate([jnp.moveaxis(window0, -2, 0), xs], axis=0)
    if resets is None:
        return History(values, None, num_lags)
    steps = jnp.arange(xs.shape[0]).reshape(-1, *(1,) * (resets.ndim - 1))
    starts = jax.lax.cummax(jnp.where(resets, steps, 0), axis=0)
    return History(values, starts, num_lags)


def _all_steps_lag(history: History, steps, k):
    """``_lag`` at every step: without restarts, a slice of the history."""
    if history.starts is None:
        return history.values[history.num_lags - k : history.values.shape[0] - k]
    return _lag(history, steps, k)


def _lag(history: History, steps, k, rows=None):
    """The input k valid steps before each of ``steps`` ((S, B...), or
    (1, N) with ``rows``), read from ``window0`` before its sequence's
    start: (S, B..., E), or (1, N, E)."""
    earlier = steps - k
    start = 0 if history.starts is None else _starts_at(history.starts, steps, rows)
    index = history.num_lags + earlier - jnp.where(earlier < start, start, 0)
    if rows is not None:
        return history.values[index, rows]
    return jnp.take_along_axis(history.values, index[..., None], axis=0)


def _starts_at(starts, steps, rows):
    """The sequence start of each of ``steps`` (0 before any step)."""
    clipped = jnp.maximum(steps, 0)
    if rows is not None:
        found = starts[clipped, rows]
    else:
        found = jnp.take_along_axis(starts, clipped, axis=0)
    return jnp.where(steps < 0, 0, found)


def _positions(valid):
    """Where the stable sort that puts valid steps first sends each step
    (the inverse of ``argsort(~valid, stable=True)``), (T, B...)."""
    num_valid = valid.sum(0, keepdims=True)
    return jnp.where(valid, jnp.cumsum(valid, 0) - 1, num_valid + jnp.cumsum(~valid, 0) - 1)


def _lift(v, like):
    """(E,) as (1, ..., 1, E) of ``like``'s rank."""
    return v.reshape((1,) * (like.ndim - 1) + v.shape)
