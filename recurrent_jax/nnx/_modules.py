"""``rj.nnx.RNN``, ``Bidirectional``, ``SimpleRNN``, ``LSTM``, ``GRU``."""

from __future__ import annotations

from collections.abc import Mapping

import jax
from flax import nnx

from recurrent_jax import _checks, doors, layers
from recurrent_jax.cells.base import Cell


def _is_variable(leaf) -> bool:
    return isinstance(leaf, nnx.Variable)


def params(module: nnx.Module) -> dict:
    """The pure core's params of ``module`` (a dict of arrays), as
    ``layer.init`` or the linen module's ``variables["params"]`` hold them."""
    return jax.tree_util.tree_map(nnx.Variable.get_value, module.params, is_leaf=_is_variable)


def load_params(module: nnx.Module, new_params) -> nnx.Module:
    """Sets ``module``'s params, in place, from the pure core's dict (e.g. a
    linen module's ``variables["params"]`` or ``rj.interop.from_torch``'s);
    names, shapes and dtypes must match. Returns ``module``."""
    doors.check_same_params(params(module), new_params)
    leaves = jax.tree_util.tree_leaves(module.params, is_leaf=_is_variable)
    for variable, value in zip(leaves, jax.tree_util.tree_leaves(new_params), strict=True):
        variable.set_value(value)
    return module


class _Recurrent(nnx.Module):
    """Shared body: the door options as attributes, the layer's params as
    ``nnx.Param`` leaves of ``self.params``, a "dropout" RNG stream."""

    def _set_up(self, options: Mapping, in_features: int, rngs: nnx.Rngs):
        if not isinstance(rngs, nnx.Rngs):
            raise ValueError(f"rngs: expected an nnx.Rngs, got {rngs!r}")
        for name, value in options.items():
            setattr(self, name, value)
        self._option_names = tuple(options)
        core = self.layer().init(rngs.params(), in_features)
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, core))
        self.rngs = rngs["dropout"].fork()

    def options(self) -> dict:
        return {name: getattr(self, name) for name in self._option_names}

    def layer(self) -> layers.Layer:
        """The pure ``rj.Layer`` these attributes describe."""
        raise NotImplementedError

    def __call__(
        self, xs, *, seq_lengths=None, mask=None, initial_carry=None, deterministic=None, rngs=None
    ):
        """ys (B..., T, F) for xs (B..., T, D), or the output after the whole
        sequence without ``return_sequences``, after the final carry with
        ``return_carry``. ``rngs`` (an ``nnx.Rngs``, stream or key) replaces
        the module's own for this call's masks."""
        options = self.options()
        deterministic = doors.resolve_deterministic(self.deterministic, deterministic, options)
        cells = tuple(getattr(self, n, None) for n in ("cell", "forward", "backward"))
        needs_key = doors.needs_key(options, deterministic, cells)
        key = _draw_key(rngs, self.rngs) if needs_key else None
        return doors.apply(
            self.layer(),
            params(self),
            xs,
            options=options,
            key=key,
            deterministic=deterministic,
            seq_lengths=seq_lengths,
            mask=mask,
            initial_carry=initial_carry,
        )

    def set_view(self, deterministic: bool | None = None):
        """``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic


def _draw_key(rngs, own):
    if rngs is None:
        return own()
    if isinstance(rngs, nnx.Rngs):
        return rngs["dropout"]()
    if isinstance(rngs, nnx.RngStream):
        return rngs()
    return rngs  # a key


def _door_options(where: str, given: Mapping, *tables) -> dict:
    # NNX modules start in training mode, as nnx.Dropout; model.eval() ends it.
    defaults = {k: v for table in tables for k, v in table.items()} | {"deterministic": False}
    _checks.check_unknown(where, given, defaults)
    return defaults | dict(given)


class RNN(_Recurrent):
    """Any ``Cell`` over a sequence, in one direction.

    ``RNN(cell, in_features, *, reverse=False, rngs, **options)`` with the
    options ``doors.LAYER`` and ``doors.OUTPUT`` (``learn_initial_carry``,
    ``dropout`` (variational input dropout), ``recurrent_dropout``,
    ``zoneout``, ``time_major``, ``engine``, ``return_sequences``,
    ``return_carry``, ``deterministic``). Params: the cell's.
    """

    def __init__(self, cell: Cell, in_features: int, *, reverse=False, rngs, **options):
        self.cell, self.reverse = cell, reverse
        self._set_up(_door_options("RNN", options, doors.LAYER, doors.OUTPUT), in_features, rngs)

    def layer(self):
        return doors.rnn_layer(self.cell, self.reverse, self.options())


class Bidirectional(_Recurrent):
    """``forward`` left to right, ``backward`` (default: a copy of
    ``forward`` with its own params) right to left, merged by ``merge_mode``.

    ``Bidirectional(forward, in_features, backward=None, *,
    merge_mode="concat", rngs, **options)``, options as ``RNN``. Params
    ``{"forward": ..., "backward": ...}``; carry ``(forward, backward)``.
    """

    def __init__(
        self, forward: Cell, in_features: int, backward=None, *, merge_mode="concat", rngs, **opts
    ):
        self.forward, self.backward, self.merge_mode = forward, backward, merge_mode
        self._set_up(
            _door_options("Bidirectional", opts, doors.LAYER, doors.OUTPUT), in_features, rngs
        )

    def layer(self):
        return doors.bidirectional_layer(
            self.forward, self.backward, self.merge_mode, self.options()
        )


class _Stacked(_Recurrent):
    family = ""

    def __init__(self, in_features: int, hidden_size: int, *, rngs, **options):
        self.hidden_size = hidden_size
        options = _door_options(self.family, options, doors.stacked_options(self.family))
        self._set_up(options, in_features, rngs)

    def layer(self):
        return doors.stacked_layer(self.family, self.hidden_size, self.options())


_SIGNATURE = "``{}(in_features, hidden_size, *, rngs, **options)``; call as ``RNN``."


class SimpleRNN(_Stacked):
    family = "SimpleRNN"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))


class LSTM(_Stacked):
    family = "LSTM"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))


class GRU(_Stacked):
    family = "GRU"
    __doc__ = doors.stacked_doc(family, _SIGNATURE.format(family))
