r"""The attention-wrapped decoder (TF Addons ``AttentionWrapper`` semantics).

One step, with ``x_t`` (B, E) the embedded previous token, ``a_{t-1}`` the
previous attentional vector (zeros at t = 0) and the cells stacked:

.. math::
    h_t = \mathrm{cells}([x_t; a_{t-1}])        (input feeding; x_t alone without)
    α_t = \mathrm{masked\_softmax}(\mathrm{score}(h_t, h_s))    c_t = Σ_s α_{t,s} h_s
    a_t = \tanh([h_t; c_t] W_c)   with an attention layer (Luong eq. 5), else c_t

The step's output is ``a_t`` (or ``h_t`` with ``output_attention=False``, the
Bahdanau-style wrapper whose logits read the cell output while ``a_t`` is
still fed back). ``W_c`` has no bias and, unlike TF Addons' default
attention layer, a tanh (Luong et al. 2015). Without an attention mechanism
the decoder is the plain stack: ``a_t = h_t``, no input feeding, zero weights.

The state holds the memory (the encoder outputs and their mask), so a step
is ``step(params, state, x_t)`` with everything per-example in ``state``:
batch-axis operations (tiling and reordering beams) apply to every leaf.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks
from recurrent_jax.cells.base import Cell, carry_dtype, carry_dtype_of, with_defaults
from recurrent_jax.seq2seq.attention import Attention, Memory, attend, make_memory

_glorot = jax.nn.initializers.glorot_uniform()


class DecoderState(NamedTuple):
    """``carries``: one carry per decoder cell, leaves (B, ·);
    ``attention``: a_{t-1} (B, A); ``memory``: the ``Memory`` attended over
    (values (B, S, M), keys (B, S, U), mask (B, S))."""

    carries: tuple
    attention: jax.Array
    memory: Memory


class AttentionDecoder(NamedTuple):
    """An attention-wrapped cell stack as pure functions.

    Attributes:
      init: ``init(key, input_size, memory_size) -> params`` with
        ``{"cells": {"layer_i": ...}, "attention": ..., "attention_layer":
        {"w": (H + M, A)}}`` (the last two only when used).
      initial_state: ``initial_state(params, values (B, S, M), mask (B, S),
        carries=None) -> DecoderState``; ``carries`` default to the cells'
        initial carries.
      step: ``step(params, state, x_t (B, E)) -> (state, (y_t (B, A'),
        weights (B, S)))``, ``A'`` = ``output_size``; scan it over time.
      output_size: features of ``y_t`` given the memory size M.
      cells: the decoder cells, bottom first.
    """

    init: Callable
    initial_state: Callable
    step: Callable
    output_size: Callable[[int], int]
    cells: tuple


def attention_decoder(
    cells: Sequence[Cell],
    mechanism: Attention | None,
    *,
    attention_layer_size: int | None = None,
    input_feeding: bool = True,
    output_attention: bool = True,
) -> AttentionDecoder:
    """Wraps a stack of ``cells`` with ``mechanism`` (see the module doc).

    Args:
      cells: decoder cells, bottom first; the top one's output queries.
      mechanism: an ``Attention`` or None (no attention).
      attention_layer_size: A, the size of ``a_t = tanh([h_t; c_t] W_c)``;
        None uses the context ``c_t`` itself (A = M).
      input_feeding: feed ``a_{t-1}`` to the bottom cell with ``x_t``.
      output_attention: ``y_t = a_t`` (Luong, default) or ``h_t`` (Bahdanau).
    """
    cells = tuple(with_defaults(c) for c in cells)
    if not cells:
        raise ValueError("cells: expected at least one decoder cell, got none")
    if attention_layer_size is not None:
        _checks.check_positive_int("attention_layer_size", attention_layer_size)
    top = cells[-1].hidden_size
    feeding = input_feeding and mechanism is not None

    def attention_size(memory_size):
        if mechanism is None:
            return top
        return memory_size if attention_layer_size is None else attention_layer_size

    def output_size(memory_size):
        return attention_size(memory_size) if output_attention else top

    def init(key, input_size, memory_size):
        k_cells, k_att, k_layer = jax.random.split(key, 3)
        size = input_size + (attention_size(memory_size) if feeding else 0)
        params: dict[str, Any] = {"cells": {}}
        cell_keys = jax.random.split(k_cells, len(cells))
        for i, (cell, k) in enumerate(zip(cells, cell_keys, strict=True)):
            params["cells"][f"layer_{i}"] = cell.init(k, size)
            size = cell.hidden_size
        if mechanism is not None:
            params["attention"] = mechanism.init(k_att, top, memory_size)
            if attention_layer_size is not None:
                shape = (top + memory_size, attention_layer_size)
                params["attention_layer"] = {"w": _glorot(k_layer, shape, jnp.float32)}
        return params

    def initial_state(params, values, mask, carries=None):
        batch = values.shape[:1]
        zeros = [
            c.initial_carry(batch, carry_dtype_of(c, params["cells"][f"layer_{i}"]))
            for i, c in enumerate(cells)
        ]
        if carries is not None:  # in the dtypes the cells run
            cast = lambda a, z: a.astype(z.dtype)  # noqa: E731
            pairs = zip(carries, zeros, strict=True)
            zeros = [jax.tree_util.tree_map(cast, c, z) for c, z in pairs]
        if mechanism is None:
            memory = Memory(values, values[..., :0], mask)
        else:
            memory = make_memory(mechanism, params["attention"], values, mask)
        dtype = carry_dtype(values.dtype, *(a.dtype for a in jax.tree_util.tree_leaves(zeros)))
        a0 = jnp.zeros((*batch, attention_size(values.shape[-1])), dtype)
        return DecoderState(tuple(zeros), a0, memory)

    def step(params, state, x_t):
        x = jnp.concatenate([x_t, state.attention.astype(x_t.dtype)], -1) if feeding else x_t
        carries = []
        for i, cell in enumerate(cells):
            p = params["cells"][f"layer_{i}"]
            carry, x = cell.step(p, state.carries[i], cell.project(p, x[..., None, :])[..., 0, :])
            carries.append(carry)
        h = x
        if mechanism is None:
            a, weights = h, jnp.zeros(state.memory.mask.shape, h.dtype)
        else:
            context, weights = attend(mechanism, params["attention"], h, state.memory)
            a = context
            if attention_layer_size is not None:
                w_c = params["attention_layer"]["w"]
                a = jnp.tanh(jnp.concatenate([h, context], -1) @ w_c)
        y = a if output_attention else h
        return DecoderState(tuple(carries), a, state.memory), (y, weights)

    return AttentionDecoder(init, initial_state, step, output_size, cells)
