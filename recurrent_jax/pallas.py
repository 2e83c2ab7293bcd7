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
and ``return_carries`` are not; float64 runs in interpret mode only (through
Triton it is refused). ``impl="auto"`` does not pick it until it is
measured on a GPU.

**Why Triton.** The kernel streams the time axis: each step reads one
(b, G) slice of xp and writes one (b, H) slice of ys, while W_hh and the
carry stay on chip for all T steps. Pallas's Triton lowering fits that
design as it is: a block's ref is a pointer into global memory and only
what a step loads (``xp_ref[t]``) enters registers, so T costs nothing on
chip, and the ``h @ W_hh`` dot stages its operands in shared memory. Mosaic
GPU (the default of ``pallas_call`` on GPUs in jax 0.10) stages every
block whole in shared memory, here the whole (T, b, G) input and outputs,
which exceeds it at any useful T. So every ``pallas_call`` passes
``pallas.triton.CompilerParams`` explicitly. What Triton needs is then
checked before lowering (``gpu_blockers``): power-of-two tensor sizes
(W_hh's widths), and W_hh plus the tile's dot operands within one
block's shared memory (``SHARED_MEMORY_BYTES``, an H100's 227 KiB).

**Where it runs** is decided by the platform the call is lowered for
(``jax.lax.platform_dependent``), not by the host: lowered for CUDA the
kernel is the Triton custom call, even from a CPU host
(``jax.export(..., platforms=["cuda"])``, as the tests do); lowered for
any other platform it runs in Pallas interpret mode (correct, slow: for
tests). The backward's step is traced with every concatenate of more than
two operands (the transpose of a gate split) rebuilt from two-operand
ones, which is all Triton lowers.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pltriton
from jax.extend import core as jax_core

from recurrent_jax import _step
from recurrent_jax.cells.base import Cell, matmul

tree_map = jax.tree_util.tree_map
BATCH_TILE = 16  # rows per program: Triton's dot needs at least 16
SHARED_MEMORY_BYTES = 232_448  # per thread block on an H100 (227 KiB)
TRITON = pltriton.CompilerParams(num_warps=4, num_stages=1)


class _Spec(NamedTuple):
    cell: Cell


PLAIN_PARAMS = frozenset({"w_ih", "w_hh", "b_ih", "b_hh", "b"})


def gpu_blockers(params, compute_dtype) -> list[str]:
    """Why the kernel cannot lower through Triton for a cell with ``params``
    (its W_hh (H_in, G)) computed in ``compute_dtype``.

    Proven by export (tests/test_lowering.py): cells whose params are
    W_ih, W_hh and biases only (plain LSTM and Elman cells); Triton's
    tensors have power-of-two sizes; W_hh with one tile's dot operands
    (``BATCH_TILE`` rows of h_in and of hh) must fit in one block's shared
    memory."""
    if np.dtype(compute_dtype).itemsize > 4:
        name = np.dtype(compute_dtype).name
        return [f"through Triton it computes in float32 or bfloat16, not {name} (float64: 'fused')"]
    extra = sorted(set(params) - PLAIN_PARAMS)
    if extra:
        return [
            f"through Triton it takes cells with W_ih, W_hh and biases only, not {extra} "
            "(peepholes, projections and layer norm are not lowered)"
        ]
    w_hh_shape = params["w_hh"].shape
    reasons = []
    widths = tuple(int(w) for w in w_hh_shape)
    if len(widths) != 2:
        return [f"Triton's kernel takes a W_hh matrix (H_in, G), got shape {widths}"]
    if any(w < 16 or w & (w - 1) for w in widths):
        reasons.append(
            f"Triton needs W_hh widths that are powers of two >= 16, got {widths} "
            "(a GRU's 3H gates are not)"
        )
    h_in, gates = widths
    itemsize = np.dtype(compute_dtype).itemsize
    needed = (h_in * gates + BATCH_TILE * (h_in + gates)) * itemsize
    if needed > SHARED_MEMORY_BYTES:
        reasons.append(
            f"W_hh {widths} in {np.dtype(compute_dtype).name} and a tile's dot "
            f"operands need {needed} bytes of shared memory, more than a block's "
            f"{SHARED_MEMORY_BYTES} (a smaller hidden size, or compute_dtype=bfloat16)"
        )
    return reasons


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
    spec = _Spec(cell)
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
    w_hh = refs[n_carry + n_rest][...]  # resident for all steps
    d_xp_ref, d_hh_ref, *outs = refs[n_carry + n_rest + 1 :]
    d_carry0_refs, d_rest_refs = outs[:n_carry], outs[n_carry:]

    gates = _gates(cell, w_hh.shape[1])
    w_hh_parts = jnp.split(w_hh, gates, axis=1)

    def elementwise(p, c, valid_t, x_parts, h_parts):  # of the gates given as parts
        inputs = _step.StepInputs(xp=jnp.concatenate(x_parts, -1), valid=valid_t > 0.5)
        return _step.pointwise(
            cell, p, _step.StepOptions(), c, inputs, jnp.concatenate(h_parts, -1)
        )

    def step_back(rest, carry, valid_t, x_parts, h_parts, d_carry, d_y):
        _, vjp = jax.vjp(
            lambda *a: elementwise(*a[:2], valid_t, *a[2:]), rest, carry, x_parts, h_parts
        )
        return vjp((d_carry, d_y))

    step_back = unconcatenated(step_back)

    def body(i, acc):
        t = xp_ref.shape[0] - 1 - i
        d_carry, d_rest = acc
        carry = carry_def.unflatten([r[t] for r in carries_refs])
        x_parts, h_parts = jnp.split(xp_ref[t], gates, -1), jnp.split(hh_ref[t], gates, -1)
        d_rest_t, d_carry_direct, d_x_parts, d_h_parts = step_back(
            rest, carry, valid_ref[t], x_parts, h_parts, d_carry, dys_ref[t]
        )
        d_h_in = sum(
            matmul(d, w.T, cell.compute_dtype) for d, w in zip(d_h_parts, w_hh_parts, strict=True)
        )
        (d_carry_read,) = jax.vjp(cell.read, carry)[1](d_h_in)
        width = w_hh.shape[1] // gates
        for g in range(gates):  # stored gate by gate: the cotangents are never joined
            d_xp_ref[t, :, g * width : (g + 1) * width] = d_x_parts[g]
            d_hh_ref[t, :, g * width : (g + 1) * width] = d_h_parts[g]
        d_carry = tree_map(jnp.add, d_carry_direct, d_carry_read)
        return d_carry, tree_map(jnp.add, d_rest, d_rest_t)

    init = (d_final, tree_map(jnp.zeros_like, rest))
    d_carry0, d_rest = jax.lax.fori_loop(0, xp_ref.shape[0], body, init)
    for ref, leaf in zip(d_carry0_refs, jax.tree_util.tree_leaves(d_carry0), strict=True):
        ref[...] = leaf
    for ref, leaf in zip(d_rest_refs, jax.tree_util.tree_leaves(d_rest), strict=True):
        ref[...] = leaf[None]


# --- lowering for Triton ----------------------------------------------------------


class _Parts(NamedTuple):
    """A concatenate left unmade: its operands, joined along ``axis``."""

    parts: list
    axis: int


# Primitives applied part by part to concatenates of equal partitions.
_ELEMENTWISE = frozenset(
    {
        *("add", "add_any", "sub", "mul", "div", "neg", "max", "min", "integer_pow"),
        *("logistic", "tanh", "exp", "log", "abs", "sign", "square", "sqrt", "rsqrt"),
        *("select_n", "convert_element_type"),
    }
)


def unconcatenated(fn):
    """``fn`` with its concatenates left unmade where Triton cannot lower
    them (it joins two tensors along a new last axis only).

    A gate split's transpose is a concatenate of the gates' cotangents,
    and a function of gates given as parts concatenates them; here such a
    value stays a list of parts as long as what consumes it is elementwise
    (applied part by part), a split or a slice at the parts' boundaries
    (which return the parts). Anything else joins the parts (two at a
    time). The values are the same as ``fn``'s."""

    def rebuilt(*args):
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        leaves = _eval_parts(closed.jaxpr, closed.consts, jax.tree_util.tree_leaves(args))
        leaves = [_join(v) for v in leaves]
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(out_shape), leaves)

    return rebuilt


def _eval_parts(jaxpr, consts, args):
    env = {}
    read = lambda v: v.val if isinstance(v, jax_core.Literal) else env[v]  # noqa: E731
    env.update(zip(jaxpr.constvars, consts, strict=True))
    env.update(zip(jaxpr.invars, args, strict=True))
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars])
        env.update(zip(eqn.outvars, outs, strict=True))
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn, ins):
    name, params = eqn.primitive.name, eqn.params
    lazy = [v for v in ins if isinstance(v, _Parts)]
    if name == "concatenate" and len(ins) > 1:
        parts = [p for v in ins for p in (v.parts if isinstance(v, _Parts) else [v])]
        return [_Parts(parts, params["dimension"])]
    if lazy and name == "split" and _splits_at_parts(lazy[0], params):
        return list(lazy[0].parts)
    if lazy and name in _ELEMENTWISE and _same_partition(ins):
        first = lazy[0]
        operands = [v.parts if isinstance(v, _Parts) else [v] * len(first.parts) for v in ins]
        columns = zip(*operands, strict=True)
        results = [_bind(eqn, list(column)) for column in columns]
        if eqn.primitive.multiple_results:
            return [_Parts(list(r), first.axis) for r in zip(*results, strict=True)]
        return [_Parts(results, first.axis)]
    if lazy and name == "slice":
        part = _whole_part(lazy[0], params)
        if part is not None:
            return [part]
    if name in ("pjit", "jit") and not lazy:
        inner = params["jaxpr"]
        return _eval_parts(inner.jaxpr, inner.consts, ins)
    outs = _bind(eqn, [_join(v) for v in ins])
    return outs if eqn.primitive.multiple_results else [outs]


def _bind(eqn, ins):
    bound = eqn.primitive.get_bind_params(eqn.params)  # jax < 0.10: (subfuns, params)
    subfuns, params = bound if isinstance(bound, tuple) else ((), bound)
    return eqn.primitive.bind(*subfuns, *ins, **params)


def _splits_at_parts(value: _Parts, params) -> bool:
    sizes = tuple(p.shape[value.axis] for p in value.parts)
    return params["axis"] == value.axis and tuple(params["sizes"]) == sizes


def _same_partition(ins) -> bool:
    """Every operand a scalar or parts of one partition along one axis."""
    lazy = [v for v in ins if isinstance(v, _Parts)]
    first = lazy[0]
    shapes = lambda v: [p.shape for p in v.parts]  # noqa: E731
    if any(v.axis != first.axis or shapes(v) != shapes(first) for v in lazy):
        return False
    return all(isinstance(v, _Parts) or np.ndim(v) == 0 for v in ins)


def _whole_part(value: _Parts, params):
    """The part that ``slice`` with ``params`` takes whole, else None."""
    start, limit = params["start_indices"], params["limit_indices"]
    if params.get("strides") not in (None, (1,) * len(start)):
        return None
    offset = 0
    for part in value.parts:
        end = offset + part.shape[value.axis]
        want = [0 if a != value.axis else offset for a in range(part.ndim)]
        stop = [d if a != value.axis else end for a, d in enumerate(part.shape)]
        if list(start) == want and list(limit) == stop:
            return part
        offset = end
    return None


def _join(value):
    """A value made whole: parts joined two at a time."""
    if not isinstance(value, _Parts):
        return value
    parts = value.parts
    while len(parts) > 1:
        pairs = [parts[i : i + 2] for i in range(0, len(parts), 2)]
        parts = [jax.lax.concatenate(p, value.axis) if len(p) == 2 else p[0] for p in pairs]
    return parts[0]


def _pallas_call(kernel, operands, **options):
    """``pallas_call(kernel, **options)(*operands)``: the Triton kernel where
    the call is lowered for CUDA, Pallas interpret mode everywhere else."""
    native = lambda *a: pl.pallas_call(kernel, compiler_params=TRITON, **options)(*a)  # noqa: E731
    interpreted = lambda *a: pl.pallas_call(kernel, interpret=True, **options)(*a)  # noqa: E731
    return jax.lax.platform_dependent(*operands, cuda=native, default=interpreted)


def _gates(cell: Cell, width: int) -> int:
    """The gates in W_hh's ``width`` columns (hidden_size each), or 1."""
    hidden = cell.hidden_size or width
    return width // hidden if width % hidden == 0 else 1


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
    _, y, hh = jax.eval_shape(lambda: _step_at(spec.cell, rest, w_hh, carry0, xp[0], valid[0]))
    struct = jax.ShapeDtypeStruct
    out_shape = [struct((num_steps, *y.shape), y.dtype)]
    out_shape += [struct(c.shape, c.dtype) for c in carry_leaves]
    if save:
        out_shape += [struct((num_steps, *c.shape), c.dtype) for c in carry_leaves]
        out_shape += [struct((num_steps, *hh.shape), hh.dtype)]
    out_specs = [
        _tiled(s.shape, time_axis=i == 0 or i > len(carry_leaves)) for i, s in enumerate(out_shape)
    ]
    in_specs = [_tiled(xp.shape, True), _tiled(valid.shape, True)]
    in_specs += [_tiled(c.shape, False) for c in carry_leaves]
    in_specs += [_whole(r.shape) for r in rest_leaves] + [_whole(w_hh.shape)]
    kernel = functools.partial(_forward_kernel, spec.cell, (carry_def, rest_def), save)
    outs = _pallas_call(
        kernel,
        (xp, valid, *carry_leaves, *rest_leaves, w_hh),
        out_shape=out_shape,
        grid=(batch // BATCH_TILE,),
        in_specs=in_specs,
        out_specs=out_specs,
        name="recurrent_jax_persistent_forward",
    )
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
    out_shape = [struct(xp.shape, xp.dtype), struct(hh_all.shape, hh_all.dtype)]
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
    outs = _pallas_call(
        kernel,
        (xp, valid, *carry_leaves, hh_all, d_ys, *d_final_leaves, *rest_leaves, w_hh),
        out_shape=out_shape,
        grid=(tiles,),
        in_specs=in_specs,
        out_specs=out_specs,
        name="recurrent_jax_persistent_backward",
    )
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
