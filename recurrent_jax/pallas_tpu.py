r"""``impl="pallas_tpu"``: a Pallas TPU (Mosaic) kernel for cells linear in
their carry (``Cell.linear``),

.. math::  h_t = a_t ⊙ h_{t−1} + b_t,

with ``a`` diagonal and real, diagonal and complex, or 2×2 blocks (each unit
a 2-vector, ``h_t[n] = a_t[n] @ h_{t−1}[n] + b_t[n]``, as LinOSS needs).

A sequential recurrence is memory-bound: every step reads a, b and writes h
once. So the kernel streams them through VMEM in blocks and keeps the carry
on chip, the design of recurrentgemma's RG-LRU kernel
(``recurrentgemma/jax/pallas.py``):

- **Layout.** Units are independent, so the batch and feature axes are
  flattened into one axis of ``M = prod(B...) · N`` recurrences, laid out as
  rows of 128 lanes, (T, R, 128), padded to whole blocks. A complex or block
  coefficient is split into real planes (``[Re a, Im a]``; ``a00, a01, a10,
  a11``), so the kernel computes in float32 only.
- **Grid.** (R / row_block, T / time_block): row blocks are independent
  ("parallel": the two TensorCores of a megacore share them), time blocks
  run in order ("arbitrary"), the carry in VMEM scratch between them. Inside
  a block a ``fori_loop`` runs its steps with the carry in vector registers,
  one (row_block, 128) tile per plane and step. Padding steps are identity
  steps (a = 1, b = 0); padding rows are too. Under ``jax.vmap`` (a sweep of
  runs) the mapped axis is folded into the rows: one kernel, more rows.
- **Backward** (``custom_vjp``). The cotangents of the states g_t give the
  adjoint recurrence, run by the same kernel backwards in time on the
  transposed (for complex: conjugated) coefficients:

  .. math::
      λ_t = g_t + a_{t+1}^⊤ λ_{t+1},\qquad
      \bar b_t = λ_t,\qquad \bar a_t = λ_t h_{t−1}^⊤ \;(\text{complex: } λ_t \overline{h_{t−1}}),
      \qquad \bar h_0 = a_1^⊤ λ_1.

  The kernel's carry there is ``a_t^⊤ λ_t``, what step t sends back to
  step t − 1, so no coefficient is shifted in memory. The forward keeps only
  a, h_0 and the states it returns.

Padding by lengths, resets and zoneout become coefficient edits before the
kernel (``parallel.linear_scan``, shared with the associative scans), so they
mean what ``_step.step`` means; log-space coefficients (minGRU/minLSTM with
``log_space=True``) are exponentiated there, which a sequential recurrence
takes as exactly as the plain scan (it forms no products over time).

**Where it runs** is decided by the platform the call is lowered for
(``jax.lax.platform_dependent``), as for ``impl="pallas"``: lowered for TPU it
is the Mosaic custom call (``tpu_custom_call``), also from a CPU host with
``jax.export(..., platforms=["tpu"])``; lowered for any other platform it
runs in Pallas's interpret mode (correct, slow: for tests). Under
``pltpu.force_tpu_interpret_mode`` the same kernel runs in TPU interpret
mode, which simulates VMEM, the grid's semantics and detects races.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import custom_partitioning
from jax.experimental.pallas import tpu as pltpu
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from recurrent_jax import _checks

LANES = 128
SUBLANES = 8  # a float32 vector register is (8, 128)
MAX_TIME_BLOCK = 256
# The blocks of one grid step, double-buffered, stay within this much VMEM:
# half of 16 MiB, the smallest default scoped VMEM limit we expect (not yet
# checked on a TPU; benchmarks/tpu_scan.sh times larger blocks too).
VMEM_BUDGET = 8 * 2**20
UNROLL = 8  # steps per iteration of the loop inside a block
# rows of recurrences are independent; time blocks run in order
SEMANTICS = pltpu.CompilerParams(dimension_semantics=("parallel", "arbitrary"))


class Form(NamedTuple):
    """How a coefficient acts on a state, written on real planes.

    Attributes:
      name: "real", "complex" or "block".
      identity: the a-planes of the identity step (a = 1).
      apply: ``apply(a, h) -> a h``, lists of planes.
      transpose: ``transpose(a, λ) -> aᵀ λ`` (complex: conj(a) λ).
      grad_a: ``grad_a(λ, h_prev)``, the cotangent of the a-planes of
        ``h = a h_prev + b`` given λ, the cotangent of h.
    """

    name: str
    identity: tuple[float, ...]
    apply: Callable
    transpose: Callable
    grad_a: Callable

    @property
    def h_planes(self) -> int:
        return 1 if self.name == "real" else 2


REAL = Form(
    "real",
    (1.0,),
    apply=lambda a, h: [a[0] * h[0]],
    transpose=lambda a, g: [a[0] * g[0]],
    grad_a=lambda g, h: [g[0] * h[0]],
)
COMPLEX = Form(  # a = ar + i ai on h = hr + i hi
    "complex",
    (1.0, 0.0),
    apply=lambda a, h: [a[0] * h[0] - a[1] * h[1], a[0] * h[1] + a[1] * h[0]],
    transpose=lambda a, g: [a[0] * g[0] + a[1] * g[1], a[0] * g[1] - a[1] * g[0]],
    grad_a=lambda g, h: [g[0] * h[0] + g[1] * h[1], g[1] * h[0] - g[0] * h[1]],
)
BLOCK = Form(  # a = [[a00, a01], [a10, a11]] on h = [h0, h1]
    "block",
    (1.0, 0.0, 0.0, 1.0),
    apply=lambda a, h: [a[0] * h[0] + a[1] * h[1], a[2] * h[0] + a[3] * h[1]],
    transpose=lambda a, g: [a[0] * g[0] + a[2] * g[1], a[1] * g[0] + a[3] * g[1]],
    grad_a=lambda g, h: [g[0] * h[0], g[0] * h[1], g[1] * h[0], g[1] * h[1]],
)


class Blocks(NamedTuple):
    """The padded (T, R, 128) layout of ``steps`` × ``units`` recurrences."""

    steps: int  # T
    units: int  # M
    time_block: int
    row_block: int

    @property
    def padded_steps(self) -> int:
        return -(-self.steps // self.time_block) * self.time_block

    @property
    def rows(self) -> int:
        rows = -(-self.units // LANES)
        return -(-rows // self.row_block) * self.row_block


def scan(a, b, h0, *, time_block: int | None = None, row_block: int = SUBLANES):
    """All states of ``h_t = a_t h_{t−1} + b_t`` (t = 1..T along axis 0).

    Args:
      a, b: (T, B..., N) float32, or complex64 for complex diagonal
        coefficients; or 2×2 blocks, ``a`` (T, B..., N, 2, 2) and ``b``
        (T, B..., N, 2) float32. ``a`` broadcasts to ``b``'s shape (blocks:
        to it with a trailing 2, from the same number of axes).
      h0: (B..., N) (complex when a is), or (B..., N, 2) for blocks.
      time_block: steps per grid step, a multiple of 8 (None: the most, up
        to ``MAX_TIME_BLOCK``, whose blocks fit ``VMEM_BUDGET``, and no more
        than T needs).
      row_block: rows of 128 recurrences per grid step, a multiple of 8.

    Returns:
      (T, B..., N) states, complex64 for complex a; (T, B..., N, 2) for
      blocks.
    """
    form = _form_of(a, b, h0)
    for name, value in (("time_block", time_block), ("row_block", row_block)):
        if value is not None and (not _checks.is_int(value) or value < 1 or value % SUBLANES):
            _checks.fail(name, "a positive multiple of 8", value)
    unit_shape = h0.shape if form is not BLOCK else h0.shape[:-1]
    num_steps = b.shape[0]
    if num_steps == 0:
        return b.astype(jnp.complex64 if form is COMPLEX else jnp.float32)
    if time_block is None:
        time_block = min(_time_block(form, row_block), -(-num_steps // SUBLANES) * SUBLANES)
    blocks = Blocks(num_steps, math.prod(unit_shape), time_block, row_block)
    a_planes, b_planes, h0_planes = _planes(form, a, b, h0)
    a_packed = tuple(_pack(p, blocks, f) for p, f in zip(a_planes, form.identity, strict=True))
    b_packed = tuple(_pack(p, blocks, 0.0) for p in b_planes)
    h0_packed = tuple(_pack_carry(p, blocks) for p in h0_planes)
    states = _recurrence(form, blocks, a_packed, b_packed, h0_packed)
    states = [_unpack(s, blocks).reshape(num_steps, *unit_shape) for s in states]
    if form is COMPLEX:
        return jax.lax.complex(*states)
    return states[0] if form is REAL else jnp.stack(states, axis=-1)


def _form_of(a, b, h0) -> Form:
    """The form of the coefficients, after checking their shapes and dtypes."""
    for name, value in (("a", a), ("b", b), ("h0", h0)):
        if jnp.dtype(value.dtype) in (jnp.float64, jnp.complex128):
            _checks.fail(name, "float32 or complex64 (Mosaic computes in float32)", value)
    form = COMPLEX if jnp.iscomplexobj(a) or jnp.iscomplexobj(b) else REAL
    if a.ndim == b.ndim + 1:
        form = BLOCK
        if a.shape[-2:] != (2, 2) or b.shape[-1:] != (2,):
            _checks.fail("a", f"2x2 blocks (..., N, 2, 2) for b (..., N, 2) {b.shape}", a)
    if b.ndim < 2 or h0.shape != b.shape[1:]:
        _checks.fail("h0", f"the shape of one step of b (T, B..., N) {b.shape}", h0)
    return form


def _time_block(form: Form, row_block: int) -> int:
    """The most steps, up to ``MAX_TIME_BLOCK``, whose blocks fit ``VMEM_BUDGET``."""
    planes = len(form.identity) + 2 * form.h_planes  # a, b in; h out
    step_bytes = 2 * planes * row_block * LANES * 4  # double-buffered float32
    block = MAX_TIME_BLOCK
    while block > SUBLANES and block * step_bytes > VMEM_BUDGET:
        block //= 2
    return block


def _planes(form: Form, a, b, h0):
    """Lists of float32 (T, B..., N) planes of a and b, (B..., N) of h0."""
    f32 = lambda x: x.astype(jnp.float32)  # noqa: E731
    if form is BLOCK:
        a = jnp.broadcast_to(a, (*b.shape, 2))
        return (
            [f32(a[..., i, j]) for i in range(2) for j in range(2)],
            [f32(b[..., 0]), f32(b[..., 1])],
            [f32(h0[..., 0]), f32(h0[..., 1])],
        )
    a = jnp.broadcast_to(a, b.shape)
    if form is COMPLEX:
        split = lambda z: [f32(jnp.real(z)), f32(jnp.imag(z))]  # noqa: E731
        return split(a), split(b), split(h0)
    return [f32(a)], [f32(b)], [f32(h0)]


def _pack(plane, blocks: Blocks, fill: float):
    """(T, B..., N) -> (T', R, 128), padded with ``fill``."""
    flat = plane.reshape(plane.shape[0], -1)
    widths = ((0, blocks.padded_steps - blocks.steps), (0, blocks.rows * LANES - blocks.units))
    return jnp.pad(flat, widths, constant_values=fill).reshape(-1, blocks.rows, LANES)


def _pack_carry(plane, blocks: Blocks):
    """(B..., N) -> (R, 128), padded with zeros."""
    flat = plane.reshape(-1)
    return jnp.pad(flat, (0, blocks.rows * LANES - blocks.units)).reshape(blocks.rows, LANES)


def _unpack(packed, blocks: Blocks):
    return packed.reshape(packed.shape[0], -1)[: blocks.steps, : blocks.units]


# --- the recurrence and its adjoint ----------------------------------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _recurrence(form, blocks, a, b, h0):
    """States (planes (T', R, 128)) from a, b (planes (T', R, 128)), h0 ((R, 128))."""
    return _kernel_call(form, blocks, False, a, b, h0)


def _recurrence_fwd(form, blocks, a, b, h0):
    states = _kernel_call(form, blocks, False, a, b, h0)
    return states, (a, h0, states)


def _recurrence_bwd(form, blocks, residuals, d_states):
    a, h0, states = residuals
    zeros = tuple(jnp.zeros_like(p) for p in h0)
    lam = _kernel_call(form, blocks, True, a, tuple(d_states), zeros)
    prev = [jnp.concatenate([h[None], s[:-1]], axis=0) for h, s in zip(h0, states, strict=True)]
    d_a = form.grad_a(lam, prev)
    d_h0 = form.transpose([p[0] for p in a], [p[0] for p in lam])
    return tuple(d_a), tuple(lam), tuple(d_h0)


_recurrence.defvjp(_recurrence_fwd, _recurrence_bwd)


def _kernel(form: Form, adjoint: bool, n_a: int, *refs):
    """Refs: a planes, b planes, h0 planes (in); states (out); carry (VMEM).

    Forward: h ← a h + b, store h. Adjoint (time reversed, b holds the
    states' cotangents): λ ← c + b, store λ, c ← aᵀ λ."""
    n_h = form.h_planes
    a_refs, b_refs = refs[:n_a], refs[n_a : n_a + n_h]
    h0_refs, out_refs, carry_refs = (refs[n_a + n_h * i : n_a + n_h * (i + 1)] for i in (1, 2, 3))

    @pl.when(pl.program_id(1) == 0)
    def _():
        for carry, h0 in zip(carry_refs, h0_refs, strict=True):
            carry[...] = h0[...]

    steps = out_refs[0].shape[0]

    def step(i, carry):
        t = steps - 1 - i if adjoint else i
        a = [r[t] for r in a_refs]
        sent = carry if adjoint else form.apply(a, carry)
        new = [x + r[t] for x, r in zip(sent, b_refs, strict=True)]
        for ref, value in zip(out_refs, new, strict=True):
            ref[t] = value
        return form.transpose(a, new) if adjoint else new

    init = [carry[...] for carry in carry_refs]
    final = jax.lax.fori_loop(0, steps, step, init, unroll=min(UNROLL, steps))
    for carry, value in zip(carry_refs, final, strict=True):
        carry[...] = value


def _kernel_call(form: Form, blocks: Blocks, adjoint: bool, a, b, h0):
    """The kernel over planes a, b (T', R, 128) and h0 (R, 128): states,
    or with ``adjoint`` the cotangents λ of b."""
    spec = _Spec(form, blocks.time_block, blocks.row_block, adjoint, len(a))
    return tuple(_call(spec)(*a, *b, *h0))


class _Spec(NamedTuple):
    """What fixes one pallas_call but its operands' shapes."""

    form: Form
    time_block: int
    row_block: int
    adjoint: bool
    n_a: int  # a-planes among the operands


@functools.cache
def _call(spec: _Spec):
    """The kernel as a function of the flat planes: the Mosaic kernel
    (partitioned over devices by rows) where it is lowered for TPU, Pallas
    interpret mode everywhere else. Under ``jax.vmap`` the mapped axis is
    folded into rows, so a sweep of runs is one kernel over more rows (and
    ``platform_dependent`` is never batched: TPU interpret mode's callbacks
    cannot be)."""
    native = _partitioned(spec)

    def interpreted(*planes):
        return _pallas_call(spec, planes, interpret=True)

    @jax.custom_batching.custom_vmap
    def call(*planes):
        return tuple(jax.lax.platform_dependent(*planes, tpu=native, default=interpreted))

    @call.def_vmap
    def fold_into_rows(axis_size, in_batched, *planes):
        planes = [
            p if batched else jnp.broadcast_to(p, (axis_size, *p.shape))
            for p, batched in zip(planes, in_batched, strict=True)
        ]
        folded = [jnp.moveaxis(p, 0, -3).reshape(*p.shape[1:-2], -1, LANES) for p in planes]
        outs = call(*folded)
        unfolded = [o.reshape(o.shape[0], axis_size, -1, LANES) for o in outs]
        return tuple(jnp.moveaxis(o, 1, 0) for o in unfolded), (True,) * len(outs)

    return call


def _partitioned(spec: _Spec):
    """The Mosaic kernel as an op that XLA partitions over devices: each
    device runs it on its own rows (split as the operands' rows are, into
    whole row blocks); time and lanes are never split. XLA cannot partition
    a Mosaic kernel itself, so without this no program partitioned over
    several devices (a sweep over a mesh) could hold it. (The interpreted
    kernel is plain XLA, which partitions itself.)"""
    n_h = spec.form.h_planes

    def local(*planes):
        return tuple(_pallas_call(spec, planes, interpret=False))

    def shardings(mesh, arg_shapes):
        axes = _row_axes(mesh, arg_shapes[0], spec.row_block)
        series, row = NamedSharding(mesh, P(None, axes, None)), NamedSharding(mesh, P(axes, None))
        return (series,) * (spec.n_a + n_h) + (row,) * n_h, (series,) * n_h

    def partition(mesh, arg_shapes, result_shape):
        args, results = shardings(mesh, arg_shapes)
        return mesh, local, results, args

    kernel = custom_partitioning(local)
    operands = ["t r l"] * (spec.n_a + n_h) + ["r l"] * n_h
    kernel.def_partition(
        partition,
        infer_sharding_from_operands=lambda mesh, args, result: shardings(mesh, args)[1],
        sharding_rule=f"{', '.join(operands)} -> {', '.join(['t r l'] * n_h)}",
        need_replication_factors=("t", "l"),
    )
    return kernel


def _row_axes(mesh, plane, row_block: int):
    """The mesh axes that split ``plane``'s rows (axis 1) into whole row
    blocks on every device, or None (rows replicated)."""
    spec = getattr(plane.sharding, "spec", ())
    axes = spec[1] if len(spec) > 1 else None
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    devices = math.prod(mesh.shape[name] for name in names)
    return axes if names and plane.shape[1] % (devices * row_block) == 0 else None


def _pallas_call(spec: _Spec, planes, interpret: bool):
    """The pallas_call over ``planes``' shapes, native or interpreted."""
    form, time_block, row_block, n_a = spec.form, spec.time_block, spec.row_block, spec.n_a
    n_h = form.h_planes
    num_steps, rows, _ = planes[n_a].shape
    num_time = num_steps // time_block

    def index(r, s):  # the adjoint takes time blocks last to first
        return (num_time - 1 - s if spec.adjoint else s, r, 0)

    series = pl.BlockSpec((time_block, row_block, LANES), index)
    row = pl.BlockSpec((row_block, LANES), lambda r, s: (r, 0))
    call = pl.pallas_call(
        functools.partial(_kernel, form, spec.adjoint, n_a),
        out_shape=[jax.ShapeDtypeStruct((num_steps, rows, LANES), jnp.float32)] * n_h,
        grid=(rows // row_block, num_time),
        in_specs=[series] * (n_a + n_h) + [row] * n_h,
        out_specs=[series] * n_h,
        scratch_shapes=[pltpu.VMEM((row_block, LANES), jnp.float32)] * n_h,
        compiler_params=SEMANTICS,  # kept when interpreted: TPU interpret mode simulates it
        interpret=interpret,
        name=f"recurrent_jax_linear_{form.name}{'_adjoint' if spec.adjoint else ''}",
    )
    return call(*planes)
