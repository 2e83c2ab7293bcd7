"""What every front door offers, in one place.

The modules of ``rj.nn`` (flax.linen), ``rj.nnx`` (Flax NNX) and ``rj.eqx``
(Equinox) are thin: each reads its options from the tables below and builds
its ``rj.Layer`` with the functions below, so an option added here reaches
every door with the same name, default and meaning.

Module kinds and their options:

- ``RNN(cell)``: ``reverse`` and ``LAYER`` (``dropout`` is the variational
  input dropout of ``rj.layer``).
- ``Bidirectional(forward, backward=None)``: ``merge_mode`` and ``LAYER``.
- ``SimpleRNN`` / ``LSTM`` / ``GRU(hidden_size)``: ``STACK``, ``CELL`` and
  the family's own cell options (``FAMILIES``); ``dropout`` acts between
  layers as in PyTorch, ``input_dropout`` is Keras's ``dropout``.
- all of them: ``OUTPUT`` (what a call returns, and evaluation mode).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax

from recurrent_jax import _checks, cells, layers, packing
from recurrent_jax.engine import Engine

OUTPUT = {
    "return_sequences": True,  # ys (B..., T, F); False: the output after the whole sequence
    "return_carry": False,  # return (final_carry, outputs)
    "deterministic": None,  # evaluation mode (also per call); None: decided by the rates
}
LAYER = {
    "learn_initial_carry": False,  # a learned initial carry (param "initial_carry")
    "dropout": 0.0,  # variational input dropout, one mask per sequence
    "recurrent_dropout": 0.0,  # one mask per sequence on h_{t-1} (Gal & Ghahramani)
    "zoneout": 0.0,  # carry units keep their value with this probability
    "time_major": False,  # (T, B..., D) inputs and outputs
    "engine": Engine(),  # how the loop runs (rj.Engine)
}
STACK = {
    "num_layers": 1,
    "bidirectional": False,
    "merge_mode": "concat",  # "concat", "sum", "mul", "ave", None or a callable
    **LAYER,
    "dropout": 0.0,  # between layers, on every layer's outputs but the last (PyTorch)
    "input_dropout": 0.0,  # variational input dropout inside every layer (Keras)
    "residual": False,  # residual connections from the second layer up
}
CELL = cells.CellOptions()._asdict()  # bias, initialisers, param_dtype, dtype


class Family(NamedTuple):
    """A stacked module's cell: its constructor, own options and the first
    line of every door's docstring for it."""

    make_cell: Callable[..., cells.Cell]
    options: Mapping[str, Any]
    summary: str


FAMILIES = {
    "SimpleRNN": Family(
        cells.elman,
        {"activation": "tanh", "num_heads": None},
        'Stacked Elman RNN (PyTorch ``nn.RNN``); ``activation`` "tanh" or "relu", '
        "``num_heads`` as ``rj.cells.elman``.",
    ),
    "LSTM": Family(
        cells.lstm,
        {
            "proj_size": None,
            "peephole": False,
            "layer_norm": False,
            "forget_bias": 1.0,
            "num_heads": None,
        },
        "Stacked LSTM (PyTorch ``nn.LSTM``); ``proj_size``, ``peephole``, ``layer_norm``, "
        "``forget_bias``, ``num_heads`` as ``rj.cells.lstm``.",
    ),
    "GRU": Family(
        cells.gru,
        {"reset_after": True, "num_heads": None},
        "Stacked GRU (PyTorch ``nn.GRU``); ``reset_after``, ``num_heads`` as ``rj.cells.gru``.",
    ),
}


STACKED_OPTIONS_DOC = """
    Options (keyword-only; ``recurrent_jax.doors``, the same in every door):
      num_layers: layers stacked (params ``layer_0``, ``layer_1``, ...).
      bidirectional, merge_mode: each layer runs both directions, merged
        ("concat" gives 2H features to the next layer, as PyTorch).
      dropout: dropout on every layer's outputs but the last (PyTorch).
      input_dropout, recurrent_dropout: per-sequence variational masks inside
        every layer (Keras's ``dropout`` and ``recurrent_dropout``).
      zoneout: zoneout rate of every layer's carry.
      residual: residual connections from the second layer up.
      learn_initial_carry: a learned initial carry per layer and direction.
      time_major, engine: layout, and how the loop runs (``rj.Engine``).
      bias, kernel_init, recurrent_init, bias_init, param_dtype, dtype: cell
        options (``rj.cells.CellOptions``); the family's own as the summary says.
      return_sequences, return_carry, deterministic: what a call returns, and
        evaluation mode (``doors.OUTPUT``).

    Params ``{"layer_0": ..., ...}``, the pure core's (``rj.layers.cell_stack``).
    The carry returned with ``return_carry`` is a tuple, one per layer; a
    bidirectional layer's is ``(forward, backward)``.
    """


def stacked_doc(family: str, signature: str) -> str:
    """The docstring of a door's ``family`` module: its summary, how the
    door builds it (``signature``) and the options every door shares."""
    return f"{FAMILIES[family].summary}\n\n    {signature}\n{STACKED_OPTIONS_DOC}"


def stacked_options(family: str) -> dict:
    """Every option of a ``SimpleRNN``/``LSTM``/``GRU`` with its default."""
    return {**STACK, **CELL, **FAMILIES[family].options, **OUTPUT}


def check_same_params(expected, given) -> None:
    """Params loaded into a module must have its names, shapes and dtypes."""
    got, want = _structure(given), _structure(expected)
    if got != want:
        raise ValueError(f"params: expected the module's params {want[1]}, got {got[1]}")


def _structure(tree):
    """(tree structure, leaves as (shape, dtype)), comparable with ``==``."""
    leaf = lambda a: (tuple(a.shape), str(a.dtype)) if hasattr(a, "shape") else repr(a)  # noqa: E731
    return jax.tree_util.tree_structure(tree), jax.tree_util.tree_map(leaf, tree)


# --- layers -------------------------------------------------------------------


def set_options(options: Mapping, table: Mapping) -> dict:
    """The entries of ``options`` that differ from ``table``'s defaults (a
    traced rate always counts as set)."""

    def is_default(value, default):
        return value is default or (type(value) is type(default) and value == default)

    return {k: v for k, v in options.items() if k in table and not is_default(v, table[k])}


def check_output(options: Mapping) -> None:
    """The ``OUTPUT`` options: bools (``deterministic`` also None)."""
    for name in ("return_sequences", "return_carry"):
        _checks.check_bool(name, options[name])
    if options.get("deterministic") is not None:  # Equinox has none: inference
        _checks.check_bool("deterministic", options["deterministic"])


def rnn_layer(cell, reverse: bool, options: Mapping) -> layers.Layer:
    """``RNN``'s layer: ``cell`` in one direction with the ``LAYER`` options."""
    check_output(options)
    _checks.check_cell("cell", cell, layer_ok=True)
    if isinstance(cell, layers.Layer):
        set_here = sorted(set_options(options, LAYER))
        if reverse or set_here:
            raise ValueError(
                f"cell: a Layer carries its own options; got a Layer with {set_here or 'reverse'}"
            )
        return cell
    return layers.layer(cell, reverse=reverse, **{k: options[k] for k in LAYER})


def bidirectional_layer(forward, backward, merge_mode, options: Mapping) -> layers.Layer:
    """``Bidirectional``'s layer: two cells with the ``LAYER`` options each,
    or two Layers, which carry their own (then setting them is an error)."""
    check_output(options)
    given = set_options(options, LAYER)
    time_major = given.pop("time_major", False)
    return layers.bidirectional(
        forward, backward, merge_mode=merge_mode, time_major=time_major, **given
    )


def stacked_layer(family: str, hidden_size: int, options: Mapping) -> layers.Layer:
    """``SimpleRNN``/``LSTM``/``GRU``'s layer: ``layers.cell_stack`` of the
    family's cell of ``hidden_size``, as PyTorch's modules."""
    check_output(options)
    spec = FAMILIES[family]
    cell = spec.make_cell(hidden_size, **{k: options[k] for k in (*CELL, *spec.options)})
    stack_options = {k: options[k] for k in STACK}
    return layers.cell_stack(cell, **stack_options)


# --- calls --------------------------------------------------------------------


def resolve_deterministic(module_value, call_value, options: Mapping) -> bool:
    """The call's value, else the module's; with neither, True when every
    rate is a Python zero, else an error (a mode must be chosen)."""
    deterministic = module_value if call_value is None else call_value
    if deterministic is not None:
        return bool(deterministic)
    rates = [options[name] for name in layers.RATES if name in options]
    if all(isinstance(r, int | float) and r == 0 for r in rates):
        return True
    raise ValueError(
        "deterministic: expected True (evaluation) or False (training) for a "
        "module with dropout, recurrent_dropout or zoneout, got None"
    )


def needs_key(options: Mapping, deterministic: bool, cells=()) -> bool:
    """Whether a call draws random masks: a door rate is set (it may be a
    traced value), or a Layer given as a cell may hold rates of its own."""
    if deterministic:
        return False
    if any(isinstance(cell, layers.Layer) for cell in cells):
        return True
    return not all(_checks.is_zero(options[name]) for name in layers.RATES if name in options)


def num_features(xs) -> int:
    """D of the inputs: xs (B..., T, D) or an ``rj.Packed``'s data."""
    return (xs.data if isinstance(xs, packing.Packed) else xs).shape[-1]


def apply(layer: layers.Layer, params, xs, *, options: Mapping, key, deterministic, **data):
    """Runs ``layer`` as a module call does: ``data`` are ``seq_lengths``,
    ``mask`` and ``initial_carry``; the result follows ``OUTPUT``."""
    carry, ys = layer.apply(
        params,
        xs,
        key=key,
        deterministic=deterministic,
        return_sequences=options["return_sequences"],
        **data,
    )
    return (carry, ys) if options["return_carry"] else ys
