"""Equinox LSTMCell / GRUCell (per-example cells, PyTorch-shaped weights)."""

from __future__ import annotations

from recurrent_jax.interop import _common, _layout, _tables
from recurrent_jax.interop._common import Spec

TYPES = {"LSTMCell": "lstm", "GRUCell": "gru"}


def from_equinox(cell):
    """An ``equinox.nn.LSTMCell`` / ``GRUCell`` -> ``(rj.nn.RNN(cell), params)``.

    LSTM: ``w_ih = weight_ih.T``, ``w_hh = weight_hh.T``, ``b = bias``
    (``bias="single"``). GRU: ``bias="double"`` with ``b_ih = bias`` and
    ``b_hh = [0, 0, bias_n]``. Equinox's LSTM state is ``(h, c)`` per example.
    """
    lay, family = _layout_of(cell)
    arrays = {s.path: _common.numpy(getattr(cell, s.path)) for s in lay.slots}
    cell_params = _layout.from_peer(lay, arrays)
    bias = "double" if "b_hh" in cell_params else ("single" if "b" in cell_params else "none")
    spec = Spec(
        family,
        cell.hidden_size,
        bias=bias,
        reset_after=True if family == "gru" else None,
        cell=True,
    )
    return _common.make_module(spec), _common.to_jax(cell_params)


def to_equinox(params, cell, *, layer=None, reset_after: bool | None = None):
    """rj cell params -> a copy of the Equinox ``cell`` holding them (Equinox
    modules are immutable). Equinox's GRU is reset-after, as PyTorch's."""
    import equinox as eqx

    lay, family = _layout_of(cell)
    _common.check_layer(layer, family, lay.name)
    variant = _common.gru_variant(family, layer, reset_after)
    arrays = _layout.to_peer(lay, _common.single(params, lay.name), reset_after=variant)
    for name, value in arrays.items():
        if tuple(getattr(cell, name).shape) != value.shape:
            raise ValueError(
                f"params: {lay.name} {name} has shape {tuple(getattr(cell, name).shape)}, "
                f"the params give {value.shape}"
            )
    names = tuple(arrays)
    new = tuple(_common.to_jax(arrays[n]).astype(getattr(cell, n).dtype) for n in names)
    return eqx.tree_at(lambda c: tuple(getattr(c, n) for n in names), cell, new)


def _layout_of(cell):
    name = type(cell).__name__
    if name not in TYPES or not type(cell).__module__.startswith("equinox"):
        raise TypeError(
            f"cell: expected equinox.nn.LSTMCell or GRUCell, got {type(cell).__module__}.{name}"
        )
    family = TYPES[name]
    return _tables.equinox_layout(family, cell.use_bias), family
