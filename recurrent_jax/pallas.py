r"""``impl="pallas"``: a persistent recurrent kernel (Pallas), forward and
backward, for cells whose only recurrent GEMM is ``hh_t = h_in,t @ W_hh``
(LSTM, GRU with reset after, Elman).

Where a scan launches a few kernels per time step and re-reads W_hh from
memory each step, one ``pallas_call`` here runs all T steps: each program of
the grid takes a tile of the batch, loads W_hh once, keeps the carry in
registers across a ``fori_loop`` over time and streams the projected inputs
xp_t (computed before the kernel as one GEMM, as everywhere in the engine).

The backward is a second kernel running time in reverse, carrying (dh, dc)
on chip and writing the per-step cotangents of the recurrent
pre-activation dhh_t; the weight gradient is then one GEMM over all steps
outside the kernel, as the fused VJP does (``recurrent_jax.fused``):

.. math::  dW_{hh} = \sum_t h_{in,t}^⊤ \, dhh_t

Both kernels compute each step with ``_step.pointwise``, the function every
backend shares, so padding means the same here. Under ``jax.vmap`` over
runs (each with its own weights), ``pallas_call``'s batching rule makes the
run axis a grid axis of the same kernel: a sweep of small models is one
launch.

Limits (the backend table's blockers): padding by mask or lengths, reverse
and initial/final carries are supported; resets, recurrent dropout, zoneout
and ``return_carries`` are not. On a CUDA GPU the kernel lowers through
Triton; elsewhere it runs in Pallas interpret mode (for tests: correct,
slow). ``impl="auto"`` does not pick it until it is measured on a GPU.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, matmul

tree_map = jax.tree_util.tree_map
BATCH_TILE = 16  # rows per program: Triton's dot needs at least 16


class _Spec(NamedTuple):
    cell: Cell
    interpret: bool


def pallas_scan(cell: Cell, params, carry0, inputs: _step.StepInputs):
    """Same result as scanning ``_step.step`` (padding by ``inputs.valid``);
    gradients by the reverse-time kernel.

    ``inputs`` is time-major: xp (T, B..., G) projected inputs, valid
    (T, B...) or None. Returns ``(final_carry, ys)`` with ys (T, B..., H).
    """
    num_steps, batch_shape = inputs.xp.shape[0], inputs.xp.shape[1:-1]
    valid = inputs.valid
    if valid is None:
        valid = jnp.ones((num_steps, *batch_shape), bool)
    flat = lambda a, n: a.reshape(*a.shape[:n], -1, *a.shape[n + len(batch_shape) :])  # noqa: E731
    xp = flat(inputs.xp, 1)
    valid = flat(valid, 1).astype(jnp.float32)
    carry = tree_map(lambda c: flat(c, 0), carry0)
    batch = xp.shape[1]
    pad = -batch % BATCH_TILE
    xp, valid = jnp.pad(xp, ((0, 0), (0, pad), (0, 0))), jnp.pad(valid, ((0, 0), (0, pad)))
    carry = tree_map(lambda c: jnp.pad(c, ((0, pad), (0, 0))), carry)
    rest = {k: v for k, v in params.items() if k not in ("w_ih", "w_hh")}
    spec = _Spec(cell, jax.default_backend() != "gpu")
    final, ys = _persistent(spec, rest, params["w_hh"], carry, xp, jax.lax.stop_gradient(valid))
    unflat = (
        lambda a, n: a[(slice(None),) * n + (slice(0, batch),)].reshape(  # noqa: E731
            *a.shape[:n], *batch_shape, *a.shape[n + 1 :]
        )
    )
    return tree_map(lambda c: unflat(c, 0), final), unflat(ys, 1)


# --- the kernels -------------------------------------------------------------------


def _step_at(cell, rest, w_hh, carry, xp_t, valid_t):
    """One step: (new carry, y, hh) with padding where ``valid_t`` is 0."""
    hh = matmul(cell.read(carry), w_hh, cell.compute_dtype)
    inputs = _step.StepInputs(xp=xp_t, valid=valid_t > 0.5)
    new, y = _step.pointwise(cell, rest, _step.StepOptions(), carry, inputs, hh)
    return new, y, hh


def _forward_kernel(cell, treedefs, save, *refs):
    """Refs: xp (T, b, G), valid (T, b), carry0 leaves, rest leaves, w_hh;
    then ys (T, b, H), final leaves and, with ``save``, the input carry of
    every step (leaves (T, b, ·)) and hh (T, b, G)."""
    carry_def, rest_def = treedefs
    n_carry, n_rest = carry_def.num_leaves, rest_def.num_leaves
    xp_ref, valid_ref, *refs = refs
    carry0 = carry_def.unflatten([r[...] for r in refs[:n_carry]])
    rest = rest_def.unflatten([r[...] for r in refs[n_carry : n_carry + n_rest]])
    w_hh = refs[n_carry + n_rest][...]  # resident for all steps
    ys_ref, *outs = refs[n_carry + n_rest + 1 :]
    final_refs, saved = outs[:n_carry], outs[n_carry:]

    def body(t, carry):
        new, y, hh = _step_at(cell, rest, w_hh, carry, xp_ref[t], valid_ref[t])
        ys_ref[t] = y.astype(ys_ref.dtype)
        if save:
            for ref, leaf in zip(saved[:n_carry], jax.tree_util.tree_leaves(carry), strict=True):
                ref[t] = leaf
            saved[n_carry][t] = hh
        return new

    final = jax.lax.fori_loop(0, xp_ref.shape[0], body, carry0)
    for ref, leaf in zip(final_refs, jax.tree_util.tree_leaves(final), strict=True):
        ref[...] = leaf


def _backward_kernel(cell, treedefs, *refs):
    """Refs: xp, valid, saved carries (leaves (T, b, ·)), hh (T, b, G), d_ys
    (T, b, H), d_final leaves, rest leaves, w_hh; then d_xp, d_hh (T, b, G),
    d_carry0 leaves and this tile's d_rest leaves (1, ·)."""
    carry_def, rest_def = treedefs
    n_carry, n_rest = carry_def.num_leaves, rest_def.num_leaves
    xp_ref, valid_ref, *refs = refs
    carries_refs, (hh_ref, dys_ref), refs = (
        refs[:n_carry],
        refs[n_carry : n_carry + 2],
        refs[n_carry + 2 :],
    )
    d_final = carry_def.unflatten([r[...] for r in refs[:n_carry]])
    rest = rest_def.unflatten([r[...] for r in refs[n_carry : n_carry + n_rest]])
    w_hh = refs[n_carry + n_rest][...]
    d_xp_ref, d_hh_ref, *outs = refs[n_carry + n_rest + 1 :]
    d_carry0_refs, d_rest_refs = outs[:n_carry], outs[n_carry:]

    def body(i, acc):
        t = xp_ref.shape[0] - 1 - i
        d_carry, d_rest = acc
        carry = carry_def.unflatten([r[t] for r in carries_refs])
        inputs = _step.StepInputs(xp=None, valid=valid_ref[t] > 0.5)

        def elementwise(p, c, x, h):
            return _step.pointwise(cell, p, _step.StepOptions(), c, inputs._replace(xp=x), h)

        _, vjp = jax.vjp(elementwise, rest, carry, xp_ref[t], hh_ref[t])
        d_rest_t, d_carry_direct, d_xp, d_hh = vjp((d_carry, dys_ref[t]))
        d_h_in = matmul(d_hh, w_hh.T, cell.compute_dtype)
        _, read_vjp = jax.vjp(cell.read, carry)
        (d_carry_read,) = read_vjp(d_h_in)
        d_xp_ref[t] = d_xp
        d_hh_ref[t] = d_hh
        return tree_map(jnp.add, d_carry_direct, d_carry_read), tree_map(jnp.add, d_rest, d_rest_t)

    init = (d_final, tree_map(jnp.zeros_like, rest))
    d_carry0, d_rest = jax.lax.fori_loop(0, xp_ref.shape[0], body, init)
    for ref, leaf in zip(d_carry0_refs, jax.tree_util.tree_leaves(d_carry0), strict=True):
        ref[...] = leaf
    for ref, leaf in zip(d_rest_refs, jax.tree_util.tree_leaves(d_rest), strict=True):
        ref[...] = leaf[None]


# --- pallas_call plumbing ----------------------------------------------------------


def _tiled(shape, time_axis: bool):
    """BlockSpec of a (T, B, ·) or (B, ·) array cut into batch tiles."""
    if time_axis:
        block = (shape[0], BATCH_TILE, *shape[2:])
        return pl.BlockSpec(block, lambda i: (0, i) + (0,) * (len(shape) - 2))
    return pl.BlockSpec((BATCH_TILE, *shape[1:]), lambda i: (i,) + (0,) * (len(shape) - 1))


def _whole(shape):
    return pl.BlockSpec(tuple(shape), lambda i: (0,) * len(shape))


def _forward(spec, rest, w_hh, carry0, xp, valid, save):
    num_steps, batch = xp.shape[:2]
    carry_leaves, carry_def = jax.tree_util.tree_flatten(carry0)
    rest_leaves, rest_def = jax.tree_util.tree_flatten(rest)
    ys_shape = jax.eval_shape(
        lambda: _step_at(spec.cell, rest, w_hh, carry0, xp[0], valid[0])[1]
    ).shape[-1]
    struct = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)  # noqa: E731
    out_shape = [struct((num_steps, batch, ys_shape))]
    out_shape += [struct(c.shape, c.dtype) for c in carry_leaves]
    if save:
        out_shape += [struct((num_steps, *c.shape), c.dtype) for c in carry_leaves]
        out_shape += [struct((num_steps, batch, w_hh.shape[1]))]
    out_specs = [
        _tiled(s.shape, time_axis=i == 0 or i > len(carry_leaves)) for i, s in enumerate(out_shape)
    ]
    in_specs = [_tiled(xp.shape, True), _tiled(valid.shape, True)]
    in_specs += [_tiled(c.shape, False) for c in carry_leaves]
    in_specs += [_whole(r.shape) for r in rest_leaves] + [_whole(w_hh.shape)]
    kernel = functools.partial(_forward_kernel, spec.cell, (carry_def, rest_def), save)
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(batch // BATCH_TILE,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=spec.interpret,
        name="recurrent_jax_persistent_forward",
    )(xp, valid, *carry_leaves, *rest_leaves, w_hh)
    n = len(carry_leaves)
    ys, final = outs[0], carry_def.unflatten(outs[1 : 1 + n])
    saved = None
    if save:
        saved = (carry_def.unflatten(outs[1 + n : 1 + 2 * n]), outs[1 + 2 * n])
    return final, ys, saved


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _persistent(spec, rest, w_hh, carry0, xp, valid):
    final, ys, _ = _forward(spec, rest, w_hh, carry0, xp, valid, save=False)
    return final, ys


def _persistent_fwd(spec, rest, w_hh, carry0, xp, valid):
    final, ys, saved = _forward(spec, rest, w_hh, carry0, xp, valid, save=True)
    return (final, ys), (rest, w_hh, xp, valid, saved)


def _persistent_bwd(spec, residuals, cotangents):
    rest, w_hh, xp, valid, (carries, hh_all) = residuals
    d_final, d_ys = cotangents
    num_steps, batch = xp.shape[:2]
    tiles = batch // BATCH_TILE
    carry_leaves, carry_def = jax.tree_util.tree_flatten(carries)
    rest_leaves, rest_def = jax.tree_util.tree_flatten(rest)
    d_final_leaves = jax.tree_util.tree_leaves(d_final)
    struct = jax.ShapeDtypeStruct
    out_shape = [struct(xp.shape, jnp.float32), struct(hh_all.shape, jnp.float32)]
    out_shape += [struct(c.shape, c.dtype) for c in d_final_leaves]
    out_shape += [struct((tiles, *r.shape), r.dtype) for r in rest_leaves]
    out_specs = [_tiled(xp.shape, True), _tiled(hh_all.shape, True)]
    out_specs += [_tiled(c.shape, False) for c in d_final_leaves]
    out_specs += [
        pl.BlockSpec((1, *r.shape), lambda i, n=r.ndim: (i,) + (0,) * n) for r in rest_leaves
    ]
    in_specs = [_tiled(xp.shape, True), _tiled(valid.shape, True)]
    in_specs += [_tiled(c.shape, True) for c in carry_leaves]
    in_specs += [_tiled(hh_all.shape, True), _tiled(d_ys.shape, True)]
    in_specs += [_tiled(c.shape, False) for c in d_final_leaves]
    in_specs += [_whole(r.shape) for r in rest_leaves] + [_whole(w_hh.shape)]
    kernel = functools.partial(_backward_kernel, spec.cell, (carry_def, rest_def))
    outs = pl.pallas_call(
        kernel,
        out_shape=out_shape,
        grid=(tiles,),
        in_specs=in_specs,
        out_specs=out_specs,
        interpret=spec.interpret,
        name="recurrent_jax_persistent_backward",
    )(xp, valid, *carry_leaves, hh_all, d_ys, *d_final_leaves, *rest_leaves, w_hh)
    n = len(d_final_leaves)
    d_xp, d_hh = outs[0], outs[1]
    d_carry0 = carry_def.unflatten(outs[2 : 2 + n])
    d_rest = rest_def.unflatten([r.sum(0) for r in outs[2 + n :]])
    h_in_all = jax.vmap(spec.cell.read)(carries)
    d_w_hh = matmul(
        h_in_all.reshape(-1, h_in_all.shape[-1]).T,
        d_hh.reshape(-1, d_hh.shape[-1]),
        spec.cell.compute_dtype,
    )
    return d_rest, d_w_hh.astype(w_hh.dtype), d_carry0, d_xp, None


_persistent.defvjp(_persistent_fwd, _persistent_bwd)
