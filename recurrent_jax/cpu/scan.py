r"""The CPU backend's scan: the FFI recurrences under custom VJPs.

Forward: one call over all steps saves what the backward needs (gate
activations, the carries entering each step); outside differentiation
(custom_vjp's primal) an inference call writes only the outputs. Backward: one reverse-time
call gives the cotangents of the pre-activations; the weight gradient is
then one GEMM in XLA,

.. math::  dW_{hh} = \sum_t h_{t-1}^⊤ \, dhh_t,

and dxp_t flows back through the input projection (``project``, one C++
call forward; dx and dW_ih as XLA GEMMs). Packed rows
restart their carry (``resets``, from ``reset_carry``) inside the calls:
``valid`` is 2 on a step that restarts, and the backward sends the carry's
cotangent there to ``reset_carry``; ``keep_carries`` also returns the carry
after every step (a packed row's sequences end inside it). Under
``jax.vmap`` (a sweep) every operand gains the run axis
(``vmap_method="broadcast_all"``) and one call runs all runs, spread over
the cores.
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
    (``cell.cudnn_kernel``) over time-major ``inputs`` (xp (T, B..., G),
    valid and reset (T, B...) or None), restarting from ``reset_carry``
    where ``reset`` is set on a valid step; ``carries``, the carry after
    every step (leaves (T, B..., H)), with ``keep_carries``, else None. The
    same function as scanning ``_step.step``."""
    num_steps, batch_shape = inputs.xp.shape[0], inputs.xp.shape[1:-1]
    rows = math.prod(batch_shape)  # explicit: T or B may be 0
    xp = inputs.xp.reshape(num_steps, rows, inputs.xp.shape[-1])
    ones = jnp.ones((num_steps, *batch_shape), bool)
    valid = ones if inputs.valid is None else inputs.valid
    reset = jnp.zeros_like(valid) if inputs.reset is None else inputs.reset & valid
    valid = (valid.astype(_F32) + reset.astype(_F32)).reshape(num_steps, rows)  # 0, 1, 2
    if reset_carry is None:
        reset_carry = carry0  # read only where reset is set
    flat = lambda c: c.reshape(rows, c.shape[-1])  # noqa: E731
    unflat = lambda a: a.reshape(*a.shape[:-2], *batch_shape, a.shape[-1])  # noqa: E731
    w_hh = params["w_hh"]
    keep = bool(keep_carries)
    if cell.cudnn_kernel == "lstm":
        carries = (carry0.h, carry0.c, reset_carry.h, reset_carry.c)
        ys, h, c, h_all, c_all = _lstm(keep, w_hh, xp, valid, *map(flat, carries))
        kept = LSTMCarry(unflat(h_all), unflat(c_all)) if keep else None
        return LSTMCarry(unflat(h), unflat(c)), unflat(ys), kept
    hidden = w_hh.shape[0]
    b_hn = params["b_hh"][2 * hidden :] if "b_hh" in params else jnp.zeros(hidden, _F32)
    ys, h, h_all = _gru(keep, w_hh, b_hn, xp, valid, flat(carry0), flat(reset_carry))
    return unflat(h), unflat(ys), (unflat(h_all) if keep else None)


# --- the input projection ----------------------------------------------------------


def project(cell: Cell, params, xs):
    """``cell.project(params, xs)`` of a plain cell, ``xs @ w_ih + bias``, on
    the cores in one call: xs (..., D) -> (..., G). The bias is the
    cell's own projection of a zero input (its biases as the cell sums
    them); gradients: XLA GEMMs (dx = d W_ihᵀ, dW_ih = xᵀ d)."""
    bias = cell.project(params, jnp.zeros((1, xs.shape[-1]), xs.dtype))[0]
    rows = xs.reshape(-1, xs.shape[-1])
    return _project(rows, params["w_ih"], bias).reshape(*xs.shape[:-1], bias.shape[-1])


@jax.custom_vjp
def _project(x, w_ih, bias):
    return _call("recurrent_jax_project", [(x.shape[0], w_ih.shape[-1])], x, w_ih, bias)[0]


def _project_fwd(x, w_ih, bias):
    return _project(x, w_ih, bias), (x, w_ih)


def _project_bwd(residuals, d_out):
    x, w_ih = residuals
    return d_out @ w_ih.T, x.T @ d_out, d_out.sum(0)


_project.defvjp(_project_fwd, _project_bwd)


def _kept(keep, steps, batch, hidden):
    """The shape of a per-step carry output: (T, B, H) kept, else (0, B, H)."""
    return (steps if keep else 0, batch, hidden)


def _call(name, shapes, *args):
    out = [jax.ShapeDtypeStruct(s, _F32) for s in shapes]
    return jax.ffi.ffi_call(name, out, vmap_method="broadcast_all")(*args)


# --- LSTM ------------------------------------------------------------------------


def _lstm_forward(keep, w_hh, xp, valid, h0, c0, reset_h, reset_c):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    seq, carry, kept = (steps, batch, hidden), (batch, hidden), _kept(keep, steps, batch, hidden)
    shapes = [seq, carry, carry, kept, kept, xp.shape, seq, seq]
    args = (xp, valid, w_hh, h0, c0, reset_h, reset_c)
    return _call("recurrent_jax_lstm_forward", shapes, *args)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _lstm(keep, w_hh, xp, valid, h0, c0, reset_h, reset_c):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    kept = _kept(keep, steps, batch, hidden)
    shapes = [(steps, batch, hidden), h0.shape, c0.shape, kept, kept]
    args = (xp, valid, w_hh, h0, c0, reset_h, reset_c)
    return tuple(_call("recurrent_jax_lstm_infer", shapes, *args))


def _lstm_fwd(keep, w_hh, xp, valid, h0, c0, reset_h, reset_c):
    outs = _lstm_forward(keep, w_hh, xp, valid, h0, c0, reset_h, reset_c)
    ys, h, c, h_all, c_all, gates, h_prev, c_prev = outs
    return (ys, h, c, h_all, c_all), (w_hh, valid, gates, h_prev, c_prev)


def _lstm_bwd(keep, residuals, cotangents):
    w_hh, valid, gates, h_prev, c_prev = residuals
    d_ys, d_h, d_c, d_h_all, d_c_all = cotangents
    shapes = [gates.shape, d_h.shape, d_c.shape, d_h.shape, d_c.shape]
    args = (valid, w_hh, gates, c_prev, d_ys, d_h, d_c, d_h_all, d_c_all)
    d_pre, d_h0, d_c0, d_reset_h, d_reset_c = _call("recurrent_jax_lstm_backward", shapes, *args)
    d_w_hh = _sum_outer(h_prev, d_pre)
    return d_w_hh, d_pre, None, d_h0, d_c0, d_reset_h, d_reset_c


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


# --- GRU -------------------------------------------------------------------------


def _gru_forward(keep, w_hh, b_hn, xp, valid, h0, reset_h):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    seq = (steps, batch, hidden)
    shapes = [seq, (batch, hidden), _kept(keep, steps, batch, hidden), xp.shape, seq, seq]
    return _call("recurrent_jax_gru_forward", shapes, xp, valid, w_hh, b_hn, h0, reset_h)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _gru(keep, w_hh, b_hn, xp, valid, h0, reset_h):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    shapes = [(steps, batch, hidden), h0.shape, _kept(keep, steps, batch, hidden)]
    return tuple(_call("recurrent_jax_gru_infer", shapes, xp, valid, w_hh, b_hn, h0, reset_h))


def _gru_fwd(keep, w_hh, b_hn, xp, valid, h0, reset_h):
    ys, h, h_all, gates, hn, h_prev = _gru_forward(keep, w_hh, b_hn, xp, valid, h0, reset_h)
    return (ys, h, h_all), (w_hh, valid, gates, hn, h_prev)


def _gru_bwd(keep, residuals, cotangents):
    w_hh, valid, gates, hn, h_prev = residuals
    d_ys, d_h, d_h_all = cotangents
    shapes = [gates.shape, gates.shape, d_h.shape, d_h.shape]
    args = (valid, w_hh, gates, hn, h_prev, d_ys, d_h, d_h_all)
    d_xp, d_hh, d_h0, d_reset_h = _call("recurrent_jax_gru_backward", shapes, *args)
    hidden = d_h.shape[-1]
    d_b_hn = d_hh[..., 2 * hidden :].sum((0, 1))
    return _sum_outer(h_prev, d_hh), d_b_hn, d_xp, None, d_h0, d_reset_h


_gru.defvjp(_gru_fwd, _gru_bwd)


def _sum_outer(h_prev, d_pre):
    """Σ_t h_{t-1}ᵀ d_pre_t as one GEMM over all steps and rows."""
    return jnp.matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, d_pre.reshape(-1, d_pre.shape[-1]))
