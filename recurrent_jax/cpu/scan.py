r"""The CPU backend's scan: the FFI recurrences under custom VJPs.

Forward: one call over all steps saves what the backward needs (gate
activations, the carries entering each step); outside differentiation
(custom_vjp's primal) an inference call writes only the outputs. Backward: one reverse-time
call gives the cotangents of the pre-activations; the weight gradient is
then one GEMM in XLA,

.. math::  dW_{hh} = \sum_t h_{t-1}^⊤ \, dhh_t,

and dxp_t flows back to ``project``'s single GEMM by autodiff. Under
``jax.vmap`` (a sweep) every operand gains the run axis
(``vmap_method="broadcast_all"``) and one call runs all runs, spread over
the cores.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, LSTMCarry

_F32 = jnp.float32


def cpu_scan(cell: Cell, params, carry0, inputs: _step.StepInputs):
    """``(final_carry, ys)`` of a plain LSTM or GRU (``cell.cudnn_kernel``)
    over time-major ``inputs`` (xp (T, B..., G), valid (T, B...) or None);
    the same function as scanning ``_step.step``."""
    num_steps, batch_shape = inputs.xp.shape[0], inputs.xp.shape[1:-1]
    rows = math.prod(batch_shape)  # explicit: T or B may be 0
    xp = inputs.xp.reshape(num_steps, rows, inputs.xp.shape[-1])
    valid = inputs.valid
    if valid is None:
        valid = jnp.ones((num_steps, *batch_shape), bool)
    valid = valid.reshape(num_steps, rows).astype(_F32)
    flat = lambda c: c.reshape(rows, c.shape[-1])  # noqa: E731
    unflat = lambda a: a.reshape(*a.shape[:-2], *batch_shape, a.shape[-1])  # noqa: E731
    w_hh = params["w_hh"]
    if cell.cudnn_kernel == "lstm":
        ys, h, c = _lstm(w_hh, xp, valid, flat(carry0.h), flat(carry0.c))
        return LSTMCarry(unflat(h), unflat(c)), unflat(ys)
    hidden = w_hh.shape[0]
    b_hn = params["b_hh"][2 * hidden :] if "b_hh" in params else jnp.zeros(hidden, _F32)
    ys, h = _gru(w_hh, b_hn, xp, valid, flat(carry0))
    return unflat(h), unflat(ys)


def _call(name, shapes, *args):
    out = [jax.ShapeDtypeStruct(s, _F32) for s in shapes]
    return jax.ffi.ffi_call(name, out, vmap_method="broadcast_all")(*args)


# --- LSTM ------------------------------------------------------------------------


def _lstm_forward(w_hh, xp, valid, h0, c0):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    seq, carry = (steps, batch, hidden), (batch, hidden)
    shapes = [seq, carry, carry, xp.shape, seq, seq]
    return _call("recurrent_jax_lstm_forward", shapes, xp, valid, w_hh, h0, c0)


@jax.custom_vjp
def _lstm(w_hh, xp, valid, h0, c0):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    shapes = [(steps, batch, hidden), h0.shape, c0.shape]
    return tuple(_call("recurrent_jax_lstm_infer", shapes, xp, valid, w_hh, h0, c0))


def _lstm_fwd(w_hh, xp, valid, h0, c0):
    ys, h, c, gates, h_prev, c_prev = _lstm_forward(w_hh, xp, valid, h0, c0)
    return (ys, h, c), (w_hh, valid, gates, h_prev, c_prev)


def _lstm_bwd(residuals, cotangents):
    w_hh, valid, gates, h_prev, c_prev = residuals
    d_ys, d_h, d_c = cotangents
    shapes = [gates.shape, d_h.shape, d_c.shape]
    d_pre, d_h0, d_c0 = _call(
        "recurrent_jax_lstm_backward", shapes, valid, w_hh, gates, c_prev, d_ys, d_h, d_c
    )
    d_w_hh = _sum_outer(h_prev, d_pre)
    return d_w_hh, d_pre, None, d_h0, d_c0


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


# --- GRU -------------------------------------------------------------------------


def _gru_forward(w_hh, b_hn, xp, valid, h0):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    seq = (steps, batch, hidden)
    shapes = [seq, (batch, hidden), xp.shape, seq, seq]
    return _call("recurrent_jax_gru_forward", shapes, xp, valid, w_hh, b_hn, h0)


@jax.custom_vjp
def _gru(w_hh, b_hn, xp, valid, h0):
    (steps, batch, _), hidden = xp.shape, h0.shape[-1]
    shapes = [(steps, batch, hidden), h0.shape]
    return tuple(_call("recurrent_jax_gru_infer", shapes, xp, valid, w_hh, b_hn, h0))


def _gru_fwd(w_hh, b_hn, xp, valid, h0):
    ys, h, gates, hn, h_prev = _gru_forward(w_hh, b_hn, xp, valid, h0)
    return (ys, h), (w_hh, valid, gates, hn, h_prev)


def _gru_bwd(residuals, cotangents):
    w_hh, valid, gates, hn, h_prev = residuals
    d_ys, d_h = cotangents
    shapes = [gates.shape, gates.shape, d_h.shape]
    d_xp, d_hh, d_h0 = _call(
        "recurrent_jax_gru_backward", shapes, valid, w_hh, gates, hn, h_prev, d_ys, d_h
    )
    hidden = d_h.shape[-1]
    d_b_hn = d_hh[..., 2 * hidden :].sum((0, 1))
    return _sum_outer(h_prev, d_hh), d_b_hn, d_xp, None, d_h0


_gru.defvjp(_gru_fwd, _gru_bwd)


def _sum_outer(h_prev, d_pre):
    """Σ_t h_{t-1}ᵀ d_pre_t as one GEMM over all steps and rows."""
    return jnp.matmul(h_prev.reshape(-1, h_prev.shape[-1]).T, d_pre.reshape(-1, d_pre.shape[-1]))
