"""``rj.nn.RNN``, ``Bidirectional``, ``SimpleRNN``, ``LSTM``, ``GRU``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax

from recurrent_jax import doors, layers
from recurrent_jax.cells.base import Cell


def _register_params(module: nn.Module, init_fn, input_size: int):
    """Registers each top-level entry of ``init_fn(key, input_size)`` as a
    flax param of the same name, so ``variables["params"]`` is that dict."""
    names = jax.eval_shape(lambda: init_fn(jax.random.PRNGKey(0), input_size)).keys()

    def entry(name):
        return lambda rng: init_fn(rng, input_size)[name]

    return {name: module.param(name, entry(name)) for name in names}


def _options_base(name: str, *tables) -> type:
    """A linen Module whose keyword-only attributes are the door options of
    ``tables`` (``recurrent_jax.doors``), defaults included."""
    options = {k: v for table in tables for k, v in table.items()}
    namespace = {"__annotations__": dict.fromkeys(options, Any)}
    for key, default in options.items():
        namespace[key] = dataclasses.field(default=default, kw_only=True)
    return type(name, (nn.Module,), namespace)


def _options(module, tables) -> dict:
    return {k: getattr(module, k) for table in tables for k in table}


def _run(module, layer, options, xs, deterministic, **data):
    params = _register_params(module, layer.init, doors.num_features(xs))
    deterministic = doors.resolve_deterministic(module.deterministic, deterministic, options)
    key = None
    if doors.needs_key(options, deterministic, _cells(module)) and module.has_rng("dropout"):
        key = module.make_rng("dropout")
    return doors.apply(
        layer, params, xs, options=options, key=key, deterministic=deterministic, **data
    )


def _cells(module) -> tuple:
    return tuple(getattr(module, name, None) for name in ("cell", "forward", "backward"))


_RNN_TABLES = (doors.LAYER, doors.OUTPUT)


class RNN(_options_base("_RNNOptions", *_RNN_TABLES)):
    """Any ``Cell`` (or ``layers.Layer``) over a sequence.

    Attributes:
      cell: a Cell, e.g. ``rj.cells.gru(64)``, or a Layer (which carries its
        own options: setting the layer options here is then an error).
      reverse: run from the last valid step back (see ``rj.unroll``).
      learn_initial_carry, dropout, recurrent_dropout, zoneout: as
        ``rj.layer`` (``dropout`` is the variational input dropout).
      time_major, engine: the layout, and how the loop runs (``rj.Engine``).
      return_sequences, return_carry, deterministic: ``doors.OUTPUT``.

    Call: ``(xs, *, seq_lengths=None, mask=None, initial_carry=None,
    deterministic=None)`` with xs (B..., T, D); returns ys (B..., T, H), or
    (B..., H) without ``return_sequences``, after the final carry with
    ``return_carry``.
    """

    cell: Cell | layers.Layer
    reverse: bool = False

    def __post_init__(self):
        super().__post_init__()
        self.layer()  # every option checked at construction, as in rj.nnx and rj.eqx

    def layer(self) -> layers.Layer:
        """The pure ``rj.Layer`` these attributes describe."""
        return doors.rnn_layer(self.cell, self.reverse, _options(self, _RNN_TABLES))

    @nn.compact
    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        options = _options(self, _RNN_TABLES)
        layer = self.layer()
        data = dict(seq_lengths=seq_lengths, mask=mask, initial_carry=initial_carry)
        return _run(self, layer, options, xs, deterministic, **data)


class Bidirectional(_options_base("_BiOptions", *_RNN_TABLES)):
    """``forward`` left to right, ``backward`` right to left, merged.

    Attributes:
      forward, backward: Cells (``backward`` defaults to a copy of
        ``forward`` with its own params).
      merge_mode: "concat", "sum", "mul", "ave", None (a pair) or a callable.
      learn_initial_carry, dropout, recurrent_dropout, zoneout: as ``RNN``.
      time_major, engine, return_sequences, return_carry, deterministic: as
        ``RNN``.

    Params: ``{"forward": ..., "backward": ...}``.
    """

    forward: Cell
    backward: Cell | None = None
    merge_mode: str | None | Callable = "concat"

    def __post_init__(self):
        super().__post_init__()
        self.layer()  # every option checked at construction

    def layer(self) -> layers.Layer:
        """The pure ``rj.Layer`` these attributes describe."""
        options = _options(self, _RNN_TABLES)
        return doors.bidirectional_layer(self.forward, self.backward, self.merge_mode, options)

    @nn.compact
    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        options = _options(self, _RNN_TABLES)
        layer = self.layer()
        data = dict(seq_lengths=seq_lengths, mask=mask, initial_carry=initial_carry)
        return _run(self, layer, options, xs, deterministic, **data)


def _stacked(family: str) -> type:
    """The linen module of a ``doors.FAMILIES`` entry."""
    tables = (doors.stacked_options(family),)

    def __post_init__(self):
        nn.Module.__post_init__(self)
        self.layer()  # every option checked at construction

    def layer(self) -> layers.Layer:
        """The pure ``rj.Layer`` these attributes describe."""
        return doors.stacked_layer(family, self.hidden_size, _options(self, tables))

    def __call__(self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None):
        options = _options(self, tables)
        data = dict(seq_lengths=seq_lengths, mask=mask, initial_carry=initial_carry)
        return _run(self, self.layer(), options, xs, deterministic, **data)

    namespace = {
        "__annotations__": {"hidden_size": int},
        "__post_init__": __post_init__,
        "layer": layer,
        "__call__": nn.compact(__call__),
        "__doc__": doors.stacked_doc(
            family, f"``{family}(hidden_size, **options)``; call as ``RNN``."
        ),
        "__module__": __name__,
        "__qualname__": family,
    }
    return type(family, (_options_base(f"_{family}Options", *tables),), namespace)


SimpleRNN = _stacked("SimpleRNN")
LSTM = _stacked("LSTM")
GRU = _stacked("GRU")
