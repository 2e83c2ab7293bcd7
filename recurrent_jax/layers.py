"""Sequence layers: a cell with its direction, bidirectional pairs and stacks.

A ``Layer`` is, like a ``Cell``, a NamedTuple of pure functions:
``init(key, input_size) -> params`` and
``apply(params, xs, **options) -> (final_carry, ys)``. Layers compose:
``stack`` takes cells or layers, ``bidirectional`` takes cells or layers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, packing
from recurrent_jax import engine as engine_lib
from recurrent_jax.cells.base import Cell, carry_dtype_of, with_defaults
from recurrent_jax.packing import Packed
from recurrent_jax.sequence import dropout_mask, unroll, valid_steps

INITIAL_CARRY = "initial_carry"
MERGE_MODES = ("concat", "sum", "mul", "ave", None)
RATES = ("dropout", "input_dropout", "recurrent_dropout", "zoneout")  # cell_stack's regularisers


class Layer(NamedTuple):
    """A sequence layer as pure functions.

    Attributes:
      init: ``init(key, input_size) -> params``.
      apply: ``apply(params, xs, *, seq_lengths=None, mask=None,
        initial_carry=None, key=None, deterministic=False,
        return_sequences=True) -> (final_carry, ys)``; xs (B..., T, D),
        ys (B..., T, output_size), or (B..., output_size) — the output after
        the whole sequence was read — when ``return_sequences`` is False.
        xs may be an ``rj.Packed``: ys is then a ``Packed`` of the same
        layout (or (N, output_size) per sequence), final carries per
        sequence (leaves (N, ·)), ``initial_carry`` one sequence's.
      output_size: features of ys (None for ``merge_mode=None`` pairs).
    """

    init: Callable
    apply: Callable
    output_size: int | None


def layer(
    cell: Cell,
    *,
    reverse: bool = False,
    learn_initial_carry: bool = False,
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    time_major: bool = False,
    keep_order: bool = True,
    engine: engine_lib.Engine | None = None,
    **engine_options,
) -> Layer:
    """One cell run in one direction by ``rj.unroll``.

    Args:
      cell: the cell.
      reverse: run from the last valid step back (see ``rj.unroll``).
      learn_initial_carry: adds a param ``initial_carry`` (the carry of one
        sequence, zeros at init) broadcast over the batch.
      dropout, recurrent_dropout, zoneout: per-sequence regularisers of
        ``rj.unroll`` (rates may be traced values).
      time_major: layout of xs and ys.
      keep_order: with ``reverse``, False returns outputs in processing order.
      engine, **engine_options: how the loop runs (``rj.Engine`` and its
        fields as keywords, as ``rj.unroll``).

    Params: the cell's, plus ``initial_carry`` when learned.
    """
    cell = with_defaults(_checks.check_cell("cell", cell))
    engine = engine_lib.resolve(engine, **engine_options)
    for name, value in dict(reverse=reverse, learn_initial_carry=learn_initial_carry).items():
        _checks.check_bool(name, value)
    for name, rate in dict(dropout=dropout, recurrent_dropout=recurrent_dropout).items():
        _checks.check_rate(name, rate)
    _checks.check_rate("zoneout", zoneout)
    time_axis = 0 if time_major else -2 - cell.spatial_dims

    def init(key, input_size):
        params = cell.init(key, input_size)
        if learn_initial_carry:
            params = params | {INITIAL_CARRY: cell.initial_carry((), carry_dtype_of(cell, params))}
        return params

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
        cell_params = {k: v for k, v in params.items() if k != INITIAL_CARRY}
        if initial_carry is None and learn_initial_carry:
            # a Packed input takes one sequence's carry, shared by all
            batch = () if isinstance(xs, Packed) else _carry_shape(xs, time_axis)
            initial_carry = jax.tree_util.tree_map(
                lambda c: jnp.broadcast_to(c, (*batch, *c.shape)), params[INITIAL_CARRY]
            )
        carry, ys = unroll(
            cell,
            cell_params,
            xs,
            initial_carry=initial_carry,
            seq_lengths=seq_lengths,
            mask=mask,
            reverse=reverse,
            time_major=time_major,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            zoneout=zoneout,
            key=key,
            deterministic=deterministic,
            keep_order=keep_order,
            engine=engine,
        )
        if not return_sequences and isinstance(ys, Packed):
            ys = packing.per_sequence_output(ys, reverse)
        elif not return_sequences:
            ys = _final_output(ys, reverse, seq_lengths, mask, time_axis, cell.spatial_dims)
        return carry, ys

    return Layer(init, apply, cell.hidden_size)


def bidirectional(
    forward: Cell | Layer,
    backward: Cell | Layer | None = None,
    *,
    merge_mode: str | None | Callable = "concat",
    time_major: bool = False,
    **layer_options,
) -> Layer:
    """Runs ``forward`` left to right and ``backward`` right to left.

    Outputs stay aligned with input positions; ``merge_mode`` combines them:
    "concat" (features 2H), "sum", "mul", "ave", None (the pair
    ``(y_fwd, y_bwd)``) or a callable ``f(y_fwd, y_bwd)``. ``backward``
    defaults to a fresh copy of ``forward`` (own params). A Cell given is
    wrapped by ``layer(cell, **layer_options)``, the backward one reversed;
    ``layer_options`` (regularisers, ``engine`` and engine fields) apply
    only to Cells given, so with two Layers they are an error.

    Params: ``{"forward": ..., "backward": ...}``.
    Carry: ``(forward_carry, backward_carry)``.
    """
    if not callable(merge_mode):
        _checks.check_choice("merge_mode", merge_mode, MERGE_MODES)
    _checks.check_cell("forward", forward, layer_ok=True)
    backward = (
        forward if backward is None else _checks.check_cell("backward", backward, layer_ok=True)
    )
    if isinstance(forward, Layer) and isinstance(backward, Layer):
        given = sorted(layer_options) + (["time_major"] if time_major else [])
        if given:
            raise ValueError(
                f"layer_options: {given} apply to Cells only; forward and "
                "backward are Layers built with their own options"
            )
    opts = dict(layer_options, time_major=time_major)
    fwd = forward if isinstance(forward, Layer) else layer(forward, **opts)
    bwd = backward if isinstance(backward, Layer) else layer(backward, reverse=True, **opts)

    def init(key, input_size):
        k_f, k_b = jax.random.split(key)
        return {"forward": fwd.init(k_f, input_size), "backward": bwd.init(k_b, input_size)}

    def apply(params, xs, *, initial_carry=None, key=None, **options):
        carries = (None, None) if initial_carry is None else initial_carry
        keys = (
            (None, None) if key is None else tuple(jax.random.split(_checks.check_key("key", key)))
        )
        c_f, y_f = fwd.apply(
            params["forward"], xs, initial_carry=carries[0], key=keys[0], **options
        )
        c_b, y_b = bwd.apply(
            params["backward"], xs, initial_carry=carries[1], key=keys[1], **options
        )
        return (c_f, c_b), merge(merge_mode, y_f, y_b)

    size = fwd.output_size
    output_size = {"concat": None if size is None else 2 * size, None: None}.get(merge_mode, size)
    if callable(merge_mode):
        output_size = None
    return Layer(init, apply, output_size)


_pair = bidirectional  # ``cell_stack``'s argument of that name shadows it there


def merge(merge_mode, y_fwd, y_bwd):
    """Combines the two directions' outputs (see ``bidirectional``); of
    ``Packed`` outputs, their data."""
    if isinstance(y_fwd, Packed) and merge_mode is not None:
        return y_fwd.replace_data(merge(merge_mode, y_fwd.data, y_bwd.data))
    if callable(merge_mode):
        return merge_mode(y_fwd, y_bwd)
    if merge_mode is None:
        return (y_fwd, y_bwd)
    if merge_mode == "concat":
        return jnp.concatenate([y_fwd, y_bwd], axis=-1)
    if merge_mode == "sum":
        return y_fwd + y_bwd
    if merge_mode == "mul":
        return y_fwd * y_bwd
    return (y_fwd + y_bwd) / 2.0


def stack(
    layers: Sequence[Cell | Layer],
    *,
    dropout=0.0,
    residual: bool = False,
    time_major: bool = False,
    engine: engine_lib.Engine | None = None,
    **engine_options,
) -> Layer:
    """Layers applied in sequence, the outputs of one the inputs of the next.

    Args:
      layers: cells (wrapped by ``layer``) or layers, bottom first.
      dropout: rate of standard dropout on the outputs of every layer but the
        last (PyTorch's ``nn.LSTM(dropout=...)``); one mask per element.
      residual: add each layer's input to its output, from the second layer
        up (their sizes must match).
      time_major: layout of xs and ys (used for cells given here).
      engine, **engine_options: how the cells given here run (as
        ``rj.unroll``); Layers given keep their own.

    Params: ``{"layer_0": ..., "layer_1": ...}``. Carry: a tuple, one per
    layer. ``initial_carry`` likewise a tuple (or None).
    """
    if not isinstance(layers, Sequence) or isinstance(layers, Cell | Layer | str):
        _checks.fail_type("layers", "a list of cells or layers, bottom first", layers)
    for i, entry in enumerate(layers):
        _checks.check_cell(f"layers[{i}]", entry, layer_ok=True)
    _checks.check_rate("dropout", dropout)
    _checks.check_bool("residual", residual)
    if (engine is not None or engine_options) and all(isinstance(x, Layer) for x in layers):
        raise ValueError(
            "engine: applies to the Cells given to stack; every entry of layers is a "
            "Layer built with its own engine"
        )
    engine = engine_lib.resolve(engine, **engine_options)
    layers = [
        lyr if isinstance(lyr, Layer) else layer(lyr, time_major=time_major, engine=engine)
        for lyr in layers
    ]
    if not layers:
        raise ValueError("layers: expected at least one cell or layer, got none")
    names = [f"layer_{i}" for i in range(len(layers))]

    def init(key, input_size):
        keys = jax.random.split(key, len(layers))
        params, size = {}, input_size
        for name, lyr, k in zip(names, layers, keys, strict=True):
            params[name] = lyr.init(k, size)
            size = lyr.output_size
        return params

    def apply(params, xs, *, initial_carry=None, key=None, deterministic=False, **options):
        _check_stack_params(params, names)
        if residual and len(layers) > 1 and not options.get("return_sequences", True):
            raise ValueError(
                "return_sequences: False gives one output per sequence from the last layer, "
                "which a residual connection cannot add to that layer's input sequence; "
                "use return_sequences=True with residual=True"
            )
        carries_in = (None,) * len(layers) if initial_carry is None else initial_carry
        if len(carries_in) != len(layers):
            raise ValueError(
                f"initial_carry: expected a tuple of {len(layers)} carries (one per "
                f"layer), got {len(carries_in)}"
            )
        keys = (
            [None] * (2 * len(layers))
            if key is None
            else list(jax.random.split(_checks.check_key("key", key), 2 * len(layers)))
        )
        carries, last = [], len(layers) - 1
        for i, (name, lyr) in enumerate(zip(names, layers, strict=True)):
            layer_options = dict(options, deterministic=deterministic)
            if i < last:
                layer_options["return_sequences"] = True
            carry, ys = lyr.apply(
                params[name], xs, initial_carry=carries_in[i], key=keys[2 * i], **layer_options
            )
            if residual and i > 0:
                ys = _residual(ys, xs, i)
            if i < last:
                ys = _between_layers(ys, dropout, keys[2 * i + 1], deterministic)
            carries.append(carry)
            xs = ys
        return tuple(carries), xs

    return Layer(init, apply, layers[-1].output_size)


def cell_stack(
    cell: Cell | Callable[..., Layer],
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    merge_mode: str | None | Callable = "concat",
    dropout=0.0,
    input_dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    residual: bool = False,
    learn_initial_carry: bool = False,
    time_major: bool = False,
    engine: engine_lib.Engine | None = None,
) -> Layer:
    """``num_layers`` copies of ``cell`` (own params each), each optionally
    bidirectional: the stack of PyTorch's ``nn.LSTM(num_layers=,
    bidirectional=, dropout=)`` and of Keras's stacked recurrent layers.
    The front doors' ``SimpleRNN``/``LSTM``/``GRU`` and the configs' ``rnn``
    model are this stack.

    Args:
      cell: the cell of every layer (layer 0 reads D features, the others
        the previous layer's outputs), or a block: a function
        ``block(*, reverse, time_major, engine) -> Layer`` such as
        ``functools.partial(rj.mamba_block, 64)``, called for each
        direction; blocks take no per-layer regulariser or learned carry.
      bidirectional, merge_mode: each layer runs both directions, merged
        ("concat" gives 2H features to the next layer).
      dropout: standard dropout on every layer's outputs but the last
        (PyTorch's ``dropout``).
      input_dropout: variational dropout of every layer's inputs, one mask
        per sequence (Keras's ``dropout`` on each stacked layer).
      recurrent_dropout, zoneout: per-sequence regularisers of every layer.
      residual: residual connections from the second layer up.
      learn_initial_carry, time_major, engine: as ``layer``.

    Params: ``{"layer_0": ..., ...}``; each bidirectional layer's
    ``{"forward": ..., "backward": ...}``.
    """
    _checks.check_positive_int("num_layers", num_layers)
    _checks.check_bool("bidirectional", bidirectional)
    if callable(cell) and not isinstance(cell, Cell):
        if _checks.check_bool("learn_initial_carry", learn_initial_carry):
            _checks.fail("learn_initial_carry", "False for a block", learn_initial_carry)
        rates = dict(
            input_dropout=input_dropout, recurrent_dropout=recurrent_dropout, zoneout=zoneout
        )
        one = _block_layer(cell, bidirectional, merge_mode, time_major, engine, rates)
        return stack([one] * num_layers, dropout=dropout, residual=residual, time_major=time_major)
    per_layer = dict(
        learn_initial_carry=learn_initial_carry,
        dropout=input_dropout,
        recurrent_dropout=recurrent_dropout,
        zoneout=zoneout,
        time_major=time_major,
        engine=engine,
    )
    if bidirectional:
        one = _pair(cell, merge_mode=merge_mode, **per_layer)
    elif merge_mode != "concat":
        _checks.fail(
            "merge_mode", "the default 'concat' (it applies with bidirectional=True)", merge_mode
        )
    else:
        one = layer(cell, **per_layer)
    return stack([one] * num_layers, dropout=dropout, residual=residual, time_major=time_major)


def _block_layer(block, bidirectional, merge_mode, time_major, engine, rates) -> Layer:
    """A layer of ``cell_stack`` made of a block, or of two (a pair)."""
    for name, rate in rates.items():
        if not _checks.is_zero(_checks.check_rate(name, rate)):
            _checks.fail(name, "0 for a block (it takes no per-layer regularisers)", rate)
    make = lambda reverse: block(reverse=reverse, time_major=time_major, engine=engine)  # noqa: E731
    if bidirectional:
        return _pair(make(False), make(True), merge_mode=merge_mode)
    if merge_mode != "concat":
        _checks.fail(
            "merge_mode", "the default 'concat' (it applies with bidirectional=True)", merge_mode
        )
    return make(False)


def _check_stack_params(params, names) -> None:
    got = sorted(params) if isinstance(params, Mapping) else None
    if got != sorted(names):
        _checks.fail("params", f"a dict with one entry per layer, {names}", got or params)


def _residual(ys, xs, index):
    if isinstance(ys, Packed):
        return ys.replace_data(_residual(ys.data, xs.data, index))
    if ys.shape[-1] != xs.shape[-1]:
        raise ValueError(
            f"residual: layer_{index} maps {xs.shape[-1]} features to "
            f"{ys.shape[-1]}; a residual connection needs them equal"
        )
    return ys + xs


def _between_layers(ys, rate, key, deterministic):
    if deterministic or _checks.is_zero(_checks.check_rate("dropout", rate)):
        return ys
    if isinstance(ys, Packed):
        return ys.replace_data(_between_layers(ys.data, rate, key, deterministic))
    if key is None:
        raise ValueError(
            "key: a PRNG key is required for dropout between layers when "
            "deterministic=False, got None"
        )
    return ys * dropout_mask(key, rate, ys.shape, ys.dtype)


def _carry_shape(xs, time_axis):
    """The batch (and spatial) axes of xs, without time and features."""
    shape = list(xs.shape)
    del shape[time_axis]
    return tuple(shape[:-1])


def _final_output(ys, reverse, seq_lengths, mask, time_axis, spatial_dims=0):
    """The output after the whole sequence was read: y at the last valid step
    forward, at the first valid step in reverse (zeros for length 0)."""
    ys = jnp.moveaxis(ys, time_axis, 0)  # (T, B..., *spatial, F)
    num_steps, batch = ys.shape[0], ys.shape[1 : ys.ndim - 1 - spatial_dims]
    valid = valid_steps(seq_lengths, mask, batch, num_steps, time_major=time_axis == 0)
    if valid is None:
        return ys[0 if reverse else num_steps - 1]
    steps = jnp.arange(num_steps).reshape(num_steps, *(1 for _ in batch))
    sentinel = jnp.where(valid, steps, num_steps if reverse else -1)
    index = sentinel.min(0) if reverse else sentinel.max(0)
    index = jnp.clip(index, 0, num_steps - 1).reshape(1, *batch, *(1,) * (ys.ndim - 1 - len(batch)))
    picked = jnp.take_along_axis(ys, jnp.broadcast_to(index, (1, *ys.shape[1:])), axis=0)
    return picked[0]  # padded outputs are zeros, so length 0 gives zeros
