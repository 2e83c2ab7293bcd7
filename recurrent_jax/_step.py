"""One engine step: a cell step wrapped with padding, resets and regularisers.

Shared by the plain scan and the fused custom-VJP path so both compute the
same function.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax.cells.base import Cell


class StepInputs(NamedTuple):
    """What the scan reads at step t (None where a feature is off)."""

    xp: Any  # (B..., G*H) projected input
    valid: jax.Array | None = None  # (B...) bool
    keep: Any = None  # carry-shaped bool: zoneout keeps the old unit
    reset: jax.Array | None = None  # (B...) bool


class StepOptions(NamedTuple):
    """What every step sees: per-sequence masks and constants."""

    recurrent_mask: jax.Array | None = None  # (B..., K) scaled dropout mask
    zoneout: Any = None  # rate, when averaging at evaluation
    reset_carry: Any = None  # carry to restart from where ``reset`` is set


def step(cell: Cell, params, options: StepOptions, carry, inputs: StepInputs):
    """(carry, y) after reading ``inputs``; ``cell`` has its defaults filled."""
    carry = restart(options, carry, inputs)
    new, y = cell.update(params, carry, inputs.xp, read(cell, options, carry))
    return finish(options, carry, inputs, new, y)


def pointwise(cell: Cell, params, options: StepOptions, carry, inputs, hh):
    """``step`` given the recurrent GEMM ``hh = read(carry) @ w_hh``."""
    new, y = cell.pointwise(params, carry, inputs.xp, hh)
    return finish(options, carry, inputs, new, y)


def restart(options, carry, inputs):
    """Restarts the carry where ``reset`` is set on a valid step (a padded
    step keeps its carry whatever the reset flag says)."""
    if inputs.reset is None:
        return carry
    reset = inputs.reset if inputs.valid is None else inputs.reset & inputs.valid
    return where_batch(reset, options.reset_carry, carry)


def read(cell, options, carry):
    """The recurrent kernel's input, with the recurrent dropout mask."""
    h_in = cell.read(carry)
    if options.recurrent_mask is not None:
        h_in = h_in * options.recurrent_mask
    return h_in


def finish(options, old, inputs, new, y):
    """Zoneout, then padding: a padded step keeps the carry and outputs 0."""
    if inputs.keep is not None:
        new = jax.tree_util.tree_map(jnp.where, inputs.keep, old, new)
    elif options.zoneout is not None:
        p = options.zoneout
        new = jax.tree_util.tree_map(lambda o, n: p * o + (1.0 - p) * n, old, new)
    if inputs.valid is not None:
        new = where_batch(inputs.valid, new, old)
        y = where_batch(inputs.valid, y, jnp.zeros_like(y))
    return new, y


def where_batch(pred, on_true, on_false):
    """``where`` over carry leaves (B..., ·) — (B..., *spatial, ·) for a
    convolutional cell — with ``pred`` (B...)."""

    def pick(a, b):
        return jnp.where(pred.reshape(*pred.shape, *(1,) * (a.ndim - pred.ndim)), a, b)

    return jax.tree_util.tree_map(pick, on_true, on_false)
