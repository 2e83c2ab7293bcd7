r"""Mamba's block (Gu & Dao 2023, §3.4 and Figure 3) as an ``rj.Layer``:
input projection, short causal convolution, SiLU, the selective SSM
(``rj.cells.s6``), the gate silu(z) and an output projection.

The block is a recurrence whose carry is ``MambaCarry(conv, ssm)``: the
convolution's window and the SSM state (Mamba's inference cache). Every
option of the engine means what it means for a cell — padding keeps both,
``reverse`` reads the valid part backwards (the convolution then looks
ahead in input positions), a packed row restarts both at each of its
sequences, the final carry is the one after the last valid step — and the
work is still done for all steps at once: the projections are single
GEMMs, the convolution is ``recurrent_jax.short_conv`` and the SSM runs on
whichever backend the engine picks (``associative`` and ``chunked`` too).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, packing, short_conv
from recurrent_jax import engine as engine_lib
from recurrent_jax.cells import _s6, base
from recurrent_jax.layers import Layer, _final_output
from recurrent_jax.packing import Packed
from recurrent_jax.sequence import reverse_valid, unroll, valid_steps


class MambaCarry(NamedTuple):
    """The block's carry: ``conv`` (B..., K−1, E) the last K − 1 inputs of
    the convolution, oldest first; ``ssm`` (B..., E·N) the S6 state."""

    conv: jax.Array
    ssm: jax.Array


def mamba_block(
    d_model: int,
    *,
    expand: int = 2,
    state_size: int = 16,
    d_conv: int = 4,
    dt_rank: int | str = "auto",
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    dt_scale: float = 1.0,
    conv_bias: bool = True,
    bias: bool = False,
    reverse: bool = False,
    keep_order: bool = True,
    time_major: bool = False,
    kernel_init=_s6.TORCH_LINEAR_INIT,
    param_dtype=jnp.float32,
    dtype=None,
    engine: engine_lib.Engine | None = None,
    **engine_options,
) -> Layer:
    r"""A Mamba block (the mixer of Mamba's ``Block``; norm and residual are
    the stack's): x (B..., T, D) -> (B..., T, d_model).

    .. math::
        [x̃_t, z_t] = x_t W_{in} (+ b_{in})
        u_t = \mathrm{silu}\big(b_{conv} + \textstyle\sum_{k<K} w_{conv}[K−1−k] ⊙ x̃_{t−k}\big)
        y_t = \mathrm{S6}(u)_t ⊙ \mathrm{silu}(z_t)
        o_t = y_t W_{out} (+ b_{out})

    with E = ``expand``·d_model channels and S6 as ``rj.cells.s6(E,
    gate=True, input_proj=False)`` of rank R = ⌈d_model/16⌉ ("auto").
    Initialisation as Mamba's: W_in, W_x, W_out PyTorch's Linear init
    U(±1/√fan_in) (``kernel_init``), the convolution's U(±1/√K), S6's own;
    biases zero. Parameters: 3·expand·d_model² when D = d_model, plus
    E·(2R + 3N + K + 3) (paper §3.4: the projections hold most of them).

    Args:
      d_model: the output size (and Mamba's input size).
      expand, state_size, d_conv, dt_rank: E/d_model, N, K and R.
      dt_min, dt_max, dt_init_floor, dt_scale: Δ's initialisation (s6).
      conv_bias, bias: biases of the convolution and of the projections.
      reverse, keep_order, time_major: as ``rj.layer``.
      kernel_init, param_dtype, dtype: initialiser of the projections,
        dtype of the params, compute dtype of the GEMMs (None: the
        params'); the convolution, Δ, the state and y stay fp32.
      engine, **engine_options: how the SSM runs (as ``rj.unroll``).

    Params: ``w_in`` (D, 2E) ``[x̃ | z]``, ``k_conv`` (K, E), ``b_conv``
    (E,), ``s6`` (``w_x``, ``w_dt``, ``dt_bias``, ``a_log``, ``d``),
    ``w_out`` (E, d_model), with ``bias`` also ``b_in`` (2E,), ``b_out``
    (d_model,). Carry: ``MambaCarry``.
    """
    M = _checks.check_positive_int("d_model", d_model)
    E = M * _checks.check_positive_int("expand", expand)
    K = _checks.check_positive_int("d_conv", d_conv)
    flags = dict(conv_bias=conv_bias, bias=bias, reverse=reverse)
    for name, value in (flags | dict(keep_order=keep_order, time_major=time_major)).items():
        _checks.check_bool(name, value)
    cell = _s6.s6(
        E,
        state_size=state_size,
        dt_rank=math.ceil(M / 16) if dt_rank == "auto" else dt_rank,
        dt_min=dt_min,
        dt_max=dt_max,
        dt_init_floor=dt_init_floor,
        dt_scale=dt_scale,
        gate=True,
        input_proj=False,
        kernel_init=kernel_init,
        param_dtype=param_dtype,
        dtype=dtype,
    )
    engine = engine_lib.resolve(engine, **engine_options)
    block = _Block(cell, M, E, K, conv_bias, bias, kernel_init, param_dtype, dtype, engine)
    block = block._replace(reverse=reverse, keep_order=keep_order, time_major=time_major)

    def apply(
        params,
        xs,
        *,
        seq_lengths=None,
        mask=None,
        initial_carry=None,
        key=None,
        deterministic=False,
        return_sequences=True,
    ):
        del key, deterministic  # nothing random in the block
        run = _apply_packed if isinstance(xs, Packed) else _apply_padded
        return run(block, params, xs, seq_lengths, mask, initial_carry, return_sequences)

    return Layer(functools.partial(_init, block), apply, M)


class _Block(NamedTuple):
    """A block's settings, for the functions below."""

    cell: base.Cell
    d_model: int  # M
    channels: int  # E
    width: int  # K
    conv_bias: bool
    bias: bool
    kernel_init: object
    param_dtype: object
    dtype: object
    engine: engine_lib.Engine
    reverse: bool = False
    keep_order: bool = True
    time_major: bool = False

    def initial_carry(self, batch_shape, dtype) -> MambaCarry:
        conv = jnp.zeros((*batch_shape, self.width - 1, self.channels), dtype)
        return MambaCarry(conv, self.cell.initial_carry(batch_shape, dtype))


def _init(block: _Block, key, input_size):
    features = base.check_init_args(key, input_size)
    k_in, k_conv, k_bias, k_s6, k_out = jax.random.split(key, 5)
    E, K, draw = block.channels, block.width, block.kernel_init
    bound = 1.0 / math.sqrt(K)  # PyTorch's Conv1d init: fan_in = K
    params = {
        "w_in": base.draw(draw, k_in, (features, 2 * E), block.param_dtype),
        "k_conv": jax.random.uniform(k_conv, (K, E), minval=-bound, maxval=bound),
        "s6": block.cell.init(k_s6, 2 * E),
        "w_out": base.draw(draw, k_out, (E, block.d_model), block.param_dtype),
    }
    if block.conv_bias:
        params["b_conv"] = jax.random.uniform(k_bias, (E,), minval=-bound, maxval=bound)
    if block.bias:
        params |= {"b_in": jnp.zeros((2 * E,)), "b_out": jnp.zeros((block.d_model,))}
    return jax.tree_util.tree_map(lambda p: p.astype(block.param_dtype), params)


def _apply_padded(block, params, xs, seq_lengths, mask, initial_carry, return_sequences):
    _checks.check_inputs(xs, params["w_in"].shape[0], block.time_major)
    time_axis = 0 if block.time_major else -2
    xs = jnp.moveaxis(xs, time_axis, 0)  # (T, B..., D)
    num_steps, batch_shape = xs.shape[0], xs.shape[1:-1]
    valid = valid_steps(seq_lengths, mask, batch_shape, num_steps, block.time_major)
    carry0 = _initial_carry(block, params, initial_carry, batch_shape)
    x, z = _project_in(block, params, xs)
    u, conv = _conv_padded(block, params, x, valid, seq_lengths, carry0.conv)
    ssm, ys = unroll(
        block.cell,
        params["s6"],
        jnp.concatenate([u, z], axis=-1),
        initial_carry=carry0.ssm,
        mask=valid,
        reverse=block.reverse,
        keep_order=block.keep_order,
        time_major=True,
        engine=block.engine,
    )
    ys = _project_out(params, ys, valid, block.dtype)
    ys = jnp.moveaxis(ys, 0, time_axis)
    if not return_sequences:
        ys = _final_output(ys, block.reverse, seq_lengths, mask, time_axis)
    return MambaCarry(conv, ssm), ys


def _conv_padded(block, params, x, valid, seq_lengths, window0):
    """silu of the convolution (T, B..., E) and the final window, reading
    each sequence's valid part forward or (``reverse``) backward."""
    lengths = None if seq_lengths is None else jnp.asarray(seq_lengths)
    if block.reverse and lengths is not None:  # the valid part reversed in place
        order = lambda a: reverse_valid(a, lengths)  # noqa: E731
        valid_order = valid
    elif block.reverse:
        order = lambda a: jnp.flip(a, 0)  # noqa: E731
        valid_order = None if valid is None else jnp.flip(valid, 0)
    else:
        order, valid_order = (lambda a: a), valid
    us, history = short_conv.causal_conv(
        order(x),
        params["k_conv"],
        params.get("b_conv"),
        window0,
        valid=valid_order,
        prefix=lengths is not None or valid is None,
    )
    count = short_conv.valid_count(valid_order, x.shape[0], x.shape[1:-1])
    return jax.nn.silu(order(us)), short_conv.window_after(history, count - 1)


def _apply_packed(block, params, packed, seq_lengths, mask, initial_carry, return_sequences):
    for name, value in dict(seq_lengths=seq_lengths, mask=mask).items():
        if value is not None:
            _checks.fail(name, "None with a Packed input (it holds its own boundaries)", value)
    if block.time_major:
        _checks.fail("time_major", "False with a Packed input (rows, slots, features)", True)
    _checks.check_inputs(packed.data, params["w_in"].shape[0], False)
    carry0 = _initial_carry(block, params, initial_carry, ())
    x, z = _project_in(block, params, packed.data)
    u, conv = _conv_packed(block, params, packed, x, carry0.conv)
    ssm, ys = unroll(
        block.cell,
        params["s6"],
        packed.replace_data(jnp.concatenate([u, z], axis=-1)),
        initial_carry=carry0.ssm,
        reverse=block.reverse,
        keep_order=block.keep_order,
        engine=block.engine,
    )
    ys = ys.replace_data(_project_out(params, ys.data, packed.valid, block.dtype))
    if not return_sequences:
        ys = packing.per_sequence_output(ys, block.reverse)
    return MambaCarry(conv, ssm), ys


def _conv_packed(block, params, packed, x, window0):
    """``_conv_padded`` of packed rows: every sequence restarts the window
    and reads only its own slots; final windows per sequence (N, K−1, E)."""
    index = packing.reversal_index(packed) if block.reverse else None
    order = (lambda a: packing.take_slots(a, index)) if block.reverse else (lambda a: a)  # noqa: E731
    rows = x.shape[0]
    us, history = short_conv.causal_conv(
        jnp.moveaxis(order(x), 1, 0),
        params["k_conv"],
        params.get("b_conv"),
        jnp.broadcast_to(window0, (rows, *window0.shape)),
        valid=packed.valid.T,
        resets=packed.resets.T,
    )
    last = jnp.maximum(packed.starts + packed.lengths - 1, 0)  # each sequence's last slot
    rank = jnp.cumsum(packed.valid, axis=1)[packed.rows, last] - 1  # its place among valid slots
    final = short_conv.window_after(history, rank, packed.rows)
    final = jnp.where((packed.lengths == 0)[:, None, None], window0[None], final)
    return jax.nn.silu(order(jnp.moveaxis(us, 0, 1))), final


def _initial_carry(block, params, initial_carry, batch_shape) -> MambaCarry:
    """The given carry or zeros, in the carry dtype of the block's params
    and compute dtype (fp32; float64 with float64 params)."""
    expected = block.initial_carry(batch_shape, base.carry_dtype(block.dtype, params["w_in"].dtype))
    if initial_carry is None:
        return expected
    _checks.check_carry("initial_carry", initial_carry, expected)
    return jax.tree_util.tree_map(lambda c, e: c.astype(e.dtype), initial_carry, expected)


def _project_in(block, params, xs):
    """x̃, z (..., E) each, fp32: one GEMM for every step."""
    xz = base.matmul(xs, params["w_in"], block.dtype)
    if "b_in" in params:
        xz = xz + base.lift(params["b_in"], xz)
    return xz[..., : block.channels], xz[..., block.channels :]


def _project_out(params, ys, valid, dtype):
    """ys W_out (+ b_out), zero at padded steps (a bias would not be)."""
    out = base.matmul(ys, params["w_out"], dtype)
    if "b_out" in params:
        out = out + base.lift(params["b_out"], out)
    if valid is None:
        return out
    return jnp.where(valid[..., None], out, jnp.zeros((), out.dtype))


BLOCKS = {"mamba": mamba_block}
"""Blocks configs name as ``model.cell``: ``name(d_model, **options) -> Layer``
(``rj.layers.cell_stack`` stacks them)."""
