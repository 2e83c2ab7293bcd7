"""``rj.eqx.RNN``, ``Bidirectional``, ``SimpleRNN``, ``LSTM``, ``GRU``."""

from __future__ import annotations

from collections.abc import Mapping

import equinox as eqx

from recurrent_jax import _checks, doors, layers
from recurrent_jax.cells.base import Cell


def load_params(module: eqx.Module, params) -> eqx.Module:
    """A copy of ``module`` holding ``params`` (the pure core's dict, e.g. a
    linen module's ``variables["params"]``); names, shapes and dtypes must
    match."""
    doors.check_same_params(module.params, params)
    return eqx.tree_at(lambda m: m.params, module, params)


def _door_options(where: str, given: Mapping, *tables) -> tuple:
    """Sorted ``(name, value)`` pairs: hashable, so a static field."""
    defaults = {k: v for table in tables for k, v in table.items() if k != "deterministic"}
    _checks.check_unknown(where, given, defaults)
    return tuple(sorted((defaults | dict(given)).items()))


class _Recurrent(eqx.Module):
    """Shared body: ``params`` (the layer's), the door options (static) and
    ``inference`` (set by ``eqx.nn.inference_mode``)."""

    params: dict
    options: tuple = eqx.field(static=True)
    inference: bool

    def layer(self) -> layers.Layer:
        """The pure ``rj.Layer`` these fields describe."""
        raise NotImplementedError

    def __call__(
        self, xs, *, seq_lengths=None, mask=None, initial_carry=None, key=None, inference=None
    ):
        """ys (*batch, T, F) for xs (*batch, T, D), or the output after the
        whole sequence without ``return_sequences``, after the final carry
        with ``return_carry``. ``key`` draws the regulariser masks (once,
        outside the recurrence); ``inference`` overrides the field."""
        options = dict(self.options)
        deterministic = self.inference if inference is None else inference
        return doors.apply(
            self.layer(),
            self.params,
            xs,
            options=options,
            key=key,
            deterministic=bool(deterministic),
            seq_lengths=seq_lengths,
            mask=mask,
            initial_carry=initial_carry,
        )


def _init(module: _Recurrent, input_size: int, key) -> dict:
    if key is None:
        raise ValueError("key: a PRNG key is required to initialise the params, got None")
    return module.layer().init(_checks.check_key("key", key), input_size)


class RNN(_Recurrent):
    """Any ``Cell`` over a sequence, in one direction.

    ``RNN(cell, input_size, *, reverse=False, key, inference=False,
    **options)`` with the options ``doors.LAYER`` and ``doors.OUTPUT``
    (``learn_initial_carry``, ``dropout`` (variational input dropout),
    ``recurrent_dropout``, ``zoneout``, ``time_major``, ``engine``,
    ``return_sequences``, ``return_carry``). Params: the cell's.
    """

    cell: Cell = eqx.field(static=True)
    reverse: bool = eqx.field(static=True)

    def __init__(self, cell, input_size, *, reverse=False, key=None, inference=False, **options):
        self.cell, self.reverse, self.inference = cell, reverse, inference
        self.options = _door_options("RNN", options, doors.LAYER, doors.OUTPUT)
        self.params = _init(self, input_size, key)

    def layer(self):
        return doors.rnn_layer(self.cell, self.reverse, dict(self.options))


class Bidirectional(_Recurrent):
    """``forward`` left to right, ``backward`` (default: a copy of
    ``forward`` with its own params) right to left, merged by ``merge_mode``.

    ``Bidirectional(forward, input_size, backward=None, *,
    merge_mode="concat", key, inference=False, **options)``, options as
    ``RNN``. Params ``{"forward": ..., "backward": ...}``.
    """

    forward: Cell = eqx.field(static=True)
    backward: Cell | None = eqx.field(static=True)
    merge_mode: object = eqx.field(static=True)

    def __init__(
        self,
        forward,
        input_size,
        backward=None,
        *,
        merge_mode="concat",
        key=None,
        inference=False,
        **options,
    ):
        self.forward, self.backward, self.merge_mode = forward, backward, merge_mode
        self.inference = inference
        self.options = _door_options("Bidirectional", options, doors.LAYER, doors.OUTPUT)
        self.params = _init(self, input_size, key)

    def layer(self):
        options = dict(self.options)
        return doors.bidirectional_layer(self.forward, self.backward, self.merge_mode, options)


class _Stacked(_Recurrent):
    hidden_size: int = eqx.field(static=True)
    family = ""

    def __init__(self, input_size, hidden_size, *, key=None, inference=False, **options):
        self.hidden_size, self.inference = hidden_size, inference
        self.options = _door_options(self.family, options, doors.stacked_options(self.family))
        self.params = _init(self, input_size, key)

    def layer(self):
        return doors.stacked_layer(self.family, self.hidden_size, dict(self.options))


_SIGNATURE = "``{}(input_size, hidden_size, *, key, inference=False, **options)``; call as ``RNN``."


class SimpleRNN(_Stacked):
    family = "SimpleRNN"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))


class LSTM(_Stacked):
    family = "LSTM"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))


class GRU(_Stacked):
    family = "GRU"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))
