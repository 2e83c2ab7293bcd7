r"""The fused backward: a custom VJP for cells whose only recurrent GEMM is
``hh_t = h_in,t @ W_hh`` (LSTM, GRU with reset after, Elman).

Autodiff of ``lax.scan`` computes the weight gradient one step at a time.
Here the backward scan carries only what is sequential — the carry cotangent
(dh, dc) — and emits the per-step cotangent of the recurrent pre-activation
dhh_t; the weight gradient is then one GEMM over all steps, as cuDNN does:

.. math::  dW_{hh} = \sum_t h_{in,t}^⊤ \, dhh_t

The input half (``project``) stays outside, so dW_ih = Σ_t x_tᵀ dxp_t is a
single GEMM by plain autodiff. The elementwise part of each step is
recomputed in the backward scan; the forward saves the carries and hh.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, matmul

tree_map = jax.tree_util.tree_map


class _Spec(NamedTuple):
    cell: Cell
    unroll: int


def fused_scan(cell: Cell, params, carry0, inputs: _step.StepInputs, options, unroll):
    """Same result as scanning ``_step.step``; gradients by the fused VJP.

    ``inputs`` is time-major; returns ``(final_carry, ys)`` with ys (T, B..., H).
    """
    rest = {k: v for k, v in params.items() if k not in ("w_ih", "w_hh")}
    aux = jax.lax.stop_gradient((inputs._replace(xp=None), options))
    return _fused(_Spec(cell, unroll), rest, params["w_hh"], carry0, inputs.xp, aux)


def _forward_scan(spec, rest, w_hh, carry0, xp, aux, save):
    cell, (step_aux, options) = spec.cell, aux

    def body(carry, per_step):
        xp_t, aux_t = per_step
        h_in = _step.read(cell, options, carry)
        hh = matmul(h_in, w_hh, cell.compute_dtype)
        inputs = aux_t._replace(xp=xp_t)
        new, y = _step.pointwise(cell, rest, options, carry, inputs, hh)
        return new, (y, (carry, hh) if save else None)

    return jax.lax.scan(body, carry0, (xp, step_aux), unroll=spec.unroll)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _fused(spec, rest, w_hh, carry0, xp, aux):
    final, (ys, _) = _forward_scan(spec, rest, w_hh, carry0, xp, aux, save=False)
    return final, ys


def _fused_fwd(spec, rest, w_hh, carry0, xp, aux):
    final, (ys, saved) = _forward_scan(spec, rest, w_hh, carry0, xp, aux, save=True)
    return (final, ys), (rest, w_hh, xp, aux, saved)


def _fused_bwd(spec, residuals, cotangents):
    cell = spec.cell
    rest, w_hh, xp, (step_aux, options), (carries, hh_all) = residuals
    d_final, d_ys = cotangents
    dt = cell.compute_dtype

    def body(acc, per_step):
        d_carry, d_rest = acc
        carry, hh, xp_t, aux_t, dy = per_step
        inputs = aux_t._replace(xp=xp_t)

        def elementwise(p, c, x, h):
            return _step.pointwise(cell, p, options, c, inputs._replace(xp=x), h)

        _, vjp = jax.vjp(elementwise, rest, carry, xp_t, hh)
        d_rest_t, d_carry_direct, d_xp, d_hh = vjp((d_carry, dy))
        d_h_in = matmul(d_hh, w_hh.T, dt)
        _, read_vjp = jax.vjp(lambda c: _step.read(cell, options, c), carry)
        (d_carry_read,) = read_vjp(d_h_in.astype(hh.dtype))
        d_carry = tree_map(jnp.add, d_carry_direct, d_carry_read)
        return (d_carry, tree_map(jnp.add, d_rest, d_rest_t)), (d_xp, d_hh)

    init = (d_final, tree_map(jnp.zeros_like, rest))
    per_step = (carries, hh_all, xp, step_aux, d_ys)
    (d_carry0, d_rest), (d_xp, d_hh) = jax.lax.scan(
        body, init, per_step, reverse=True, unroll=spec.unroll
    )
    h_in_all = jax.vmap(lambda c: _step.read(cell, options, c))(carries)
    d_w_hh = matmul(
        h_in_all.reshape(-1, h_in_all.shape[-1]).T, d_hh.reshape(-1, d_hh.shape[-1]), dt
    )
    return d_rest, d_w_hh.astype(w_hh.dtype), d_carry0, d_xp, None


_fused.defvjp(_fused_fwd, _fused_bwd)
