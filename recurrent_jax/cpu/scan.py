r"""The CPU backend's scan: the FFI recurrences under custom VJPs.

Forward: one call over all steps projects each step's inputs inside its
recurrent product (bias + x_t W_ih + h_{t-1} W_hh) and saves what the
backward reads (gate activations, the carries entering each step); outside
differentiation (custom_vjp's primal) an inference call writes only the
outputs. Backward: one reverse-time call gives every cotangent, the inputs'
(dx_t = dpre_t W_ihᵀ) and the weights' among them,

.. math::  dW_{ih} = \sum_t x_t^⊤ dpre_t, \quad dW_{hh} = \sum_t h_{t-1}^⊤ dpre_t,

summed over blocks of steps inside the call. Packed rows restart their
carry (``resets``, from ``reset_carry``) inside the calls: ``valid`` is 2
on a step that restarts, and the backward sends the carry's cotangent there
to ``reset_carry``; ``keep_carries`` also returns the carry after every
step (a packed row's sequences end inside it). Under ``jax.vmap`` (a sweep)
every operand gains the run axis (``vmap_method="broadcast_all"``) and one
call runs all runs, spread over the cores.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, LSTMCarry

_F32 = jnp.float32


def cpu_scan(
    cell: Cell, params, carry0, inputs: _step.StepInputs, reset_carry=None, keep_carries=False
):
    """``(final_carry, ys, carries)`` of a plain LSTM or GRU
    (``cell.cudnn_kernel``) over time-major raw inputs (``inputs.xp`` (T,
    B..., D), before the input projection; valid and reset (T, B...) or
    None), restarting from ``reset_carry`` where ``reset`` is set on a valid
    step; ``carries``, the carry after every step (leaves (T, B..., H)), with
    ``keep_carries``, else None. The same function as projecting with
    ``cell.project`` and scanning ``_step.step``."""
    num_steps, batch_shape = inputs.xp.shape[0], inputs.xp.shape[1:-1]
    rows = math.prod(batch_shape)  # explicit: T or B may be 0
    x = inputs.xp.reshape(num_steps, rows, inputs.xp.shape[-1])
    ones = jnp.ones((num_steps, *batch_shape), bool)
    valid = ones if inputs.valid is None else inputs.valid
    reset = jnp.zeros_like(valid) if inputs.reset is None else inputs.reset & valid
    valid = (valid.astype(_F32) + reset.astype(_F32)).reshape(num_steps, rows)  # 0, 1, 2
    if reset_carry is None:
        reset_carry = carry0  # read only where reset is set
    flat = lambda c: c.reshape(rows, c.shape[-1])  # noqa: E731
    unflat = lambda a: a.reshape(*a.shape[:-2], *batch_shape, a.shape[-1])  # noqa: E731
    # The cell's projection of a zero input: its biases as the cell sums them.
    bias = cell.project(params, jnp.zeros((1, x.shape[-1]), x.dtype))[0]
    weights = (params["w_ih"], bias, params["w_hh"])
    keep = bool(keep_carries)
    if cell.cudnn_kernel == "lstm":
        carries = (carry0.h, carry0.c, reset_carry.h, reset_carry.c)
        ys, h, c, h_all, c_all = _lstm(keep, *weights, x, valid, *map(flat, carries))
        kept = LSTMCarry(unflat(h_all), unflat(c_all)) if keep else None
        return LSTMCarry(unflat(h), unflat(c)), unflat(ys), kept
    hidden = params["w_hh"].shape[0]
    b_hn = params["b_hh"][2 * hidden :] if "b_hh" in params else jnp.zeros(hidden, _F32)
    ys, h, h_all = _gru(keep, *weights, b_hn, x, valid, flat(carry0), flat(reset_carry))
    return unflat(h), unflat(ys), (unflat(h_all) if keep else None)


def _kept(keep, steps, batch, hidden):
    """The shape of a per-step carry output: (T, B, H) kept, else (0, B, H)."""
    return (steps if keep else 0, batch, hidden)


def _call(name, shapes, *args):
    out = [jax.ShapeDtypeStruct(s, _F32) for s in shapes]
    return jax.ffi.ffi_call(name, out, vmap_method="broadcast_all")(*args)


# --- LSTM ------------------------------------------------------------------------


def _shapes(keep, x, w_hh):
    (steps, batch, _), hidden = x.shape, w_hh.shape[0]
    seq, carry, kept = (steps, batch, hidden), (batch, hidden), _kept(keep, steps, batch, hidden)
    return seq, carry, kept


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(keep, w_ih, bias, w_hh, x, valid, h0, c0, reset_h, reset_c):
    seq, carry, kept = _shapes(keep, x, w_hh)
    args = (x, valid, w_ih, bias, w_hh, h0, c0, reset_h, reset_c)
    return tuple(_call("recurrent_jax_lstm_infer", [seq, carry, carry, kept, kept], *args))


def _lstm_fwd(keep, w_ih, bias, w_hh, x, valid, h0, c0, reset_h, reset_c):
    seq, carry, kept = _shapes(keep, x, w_hh)
    gates = (*seq[:2], w_hh.shape[1])
    shapes = [seq, carry, carry, kept, kept, gates, seq, seq]
    args = (x, valid, w_ih, bias, w_hh, h0, c0, reset_h, reset_c)
    ys, h, c, h_all, c_all, *saved = _call("recurrent_jax_lstm_forward", shapes, *args)
    return (ys, h, c, h_all, c_all), (x, valid, w_ih, w_hh, *saved)


def _lstm_bwd(keep, residuals, cotangents):
    x, valid, w_ih, w_hh, gates, h_prev, c_prev = residuals
    carry = cotangents[1].shape
    shapes = [x.shape, w_ih.shape, (w_ih.shape[-1],), w_hh.shape, carry, carry, carry, carry]
    args = (x, valid, w_ih, w_hh, gates, h_prev, c_prev, *cotangents)
    d_x, d_w_ih, d_bias, d_w_hh, *d_carries = _call("recurrent_jax_lstm_backward", shapes, *args)
    return (d_w_ih, d_bias, d_w_hh, d_x, None, *d_carries)


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


# --- GRU -------------------------------------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(keep, w_ih, bias, w_hh, b_hn, x, valid, h0, reset_h):
    seq, carry, kept = _shapes(keep, x, w_hh)
    args = (x, valid, w_ih, bias, w_hh, b_hn, h0, reset_h)
    return tuple(_call("recurrent_jax_gru_infer", [seq, carry, kept], *args))


def _gru_fwd(keep, w_ih, bias, w_hh, b_hn, x, valid, h0, reset_h):
    seq, carry, kept = _shapes(keep, x, w_hh)
    gates = (*seq[:2], w_hh.shape[1])
    args = (x, valid, w_ih, bias, w_hh, b_hn, h0, reset_h)
    shapes = [seq, carry, kept, gates, seq, seq]
    ys, h, h_all, *saved = _call("recurrent_jax_gru_forward", shapes, *args)
    return (ys, h, h_all), (x, valid, w_ih, w_hh, *saved)


def _gru_bwd(keep, residuals, cotangents):
    x, valid, w_ih, w_hh, gates, hn, h_prev = residuals
    carry = cotangents[1].shape
    hidden = (w_hh.shape[0],)
    shapes = [x.shape, w_ih.shape, (w_ih.shape[-1],), w_hh.shape, hidden, carry, carry]
    args = (x, valid, w_ih, w_hh, gates, hn, h_prev, *cotangents)
    d_x, d_w_ih, d_bias, d_w_hh, d_b_hn, d_h0, d_reset_h = _call(
        "recurrent_jax_gru_backward", shapes, *args
    )
    return d_w_ih, d_bias, d_w_hh, d_b_hn, d_x, None, d_h0, d_reset_h


_gru.defvjp(_gru_fwd, _gru_bwd)
