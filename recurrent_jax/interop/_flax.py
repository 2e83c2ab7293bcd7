"""Flax cells: linen LSTMCell / OptimizedLSTMCell / GRUCell / SimpleCell
params, and NNX cells (their nnx.Param state)."""

from __future__ import annotations

from recurrent_jax.interop import _common, _layout, _tables
from recurrent_jax.interop._common import Spec
from recurrent_jax.interop._layout import family_of

LINEN_TYPES = {
    "LSTMCell": "lstm",
    "OptimizedLSTMCell": "lstm",
    "GRUCell": "gru",
    "SimpleCell": "elman",
}
SUPPORTED = "LSTMCell, OptimizedLSTMCell, GRUCell or SimpleCell"


def from_flax_linen(params, cell=None):
    """Flax linen cell params -> ``(rj.nn.RNN(cell), params)``.

    ``params``: the cell's params (or ``{"params": ...}`` variables) of an
    LSTMCell / OptimizedLSTMCell (the same params), GRUCell or SimpleCell,
    told apart by their keys. ``cell``: the flax module, to check that its
    activations are the standard ones (and SimpleCell's activation, tanh or
    relu, and residual=False). Biases: LSTM and SimpleCell give
    ``bias="single"`` (``b`` = the h* biases), GRUCell ``bias="double"``.
    Flax's LSTM carry is ``(c, h)``, rj's ``LSTMCarry(h, c)``.
    """
    flat = _common.flatten(_unwrap(params))
    family = _linen_family(flat)
    activation = _check_cell(cell, family)
    cell_params = _layout.from_peer(_tables.FLAX_LINEN[family], flat)
    return _module(family, cell_params, activation), _common.to_jax(cell_params)


def to_flax_linen(params, cell=None, *, layer=None, reset_after: bool | None = None) -> dict:
    """rj cell params -> the params dict of the matching Flax linen cell
    (LSTMCell / OptimizedLSTMCell, GRUCell or SimpleCell, by the params'
    gate count; ``cell`` checks it). GRUCell is reset-after: a reset-before
    GRU (``reset_after=False`` or ``layer=``) is a ValueError."""
    cell_params = _common.single(params, "a Flax linen cell")
    family = family_of(cell_params)
    activation = _check_cell(cell, family)
    _common.check_layer(layer, family, "the Flax cell", activation)
    variant = _common.gru_variant(family, layer, reset_after)
    flat = _layout.to_peer(_tables.FLAX_LINEN[family], cell_params, reset_after=variant)
    return _common.to_jax(_common.unflatten(flat))


def from_flax_nnx(cell):
    """A Flax NNX LSTMCell / OptimizedLSTMCell / GRUCell / SimpleCell ->
    ``(rj.nn.RNN(cell), params)`` (NNX GRUCell has no b_hn: ``bias="single"``)."""
    from flax import nnx

    lay, family = _nnx_layout(cell)
    activation = _check_cell(cell, family)
    flat = _common.flatten(nnx.to_pure_dict(nnx.state(cell, nnx.Param)))
    cell_params = _layout.from_peer(lay, flat)
    return _module(family, cell_params, activation), _common.to_jax(cell_params)


def to_flax_nnx(params, cell, *, layer=None, reset_after: bool | None = None):
    """Writes rj cell params into a Flax NNX cell in place and returns it.

    NNX GRUCell computes n = tanh(x W_in + b_in + r ⊙ (h W_hn)) with no slot
    for b_hn: params with a nonzero ``b_hh[n]`` raise ValueError."""
    from flax import nnx

    lay, family = _nnx_layout(cell)
    activation = _check_cell(cell, family)
    _common.check_layer(layer, family, lay.name, activation)
    variant = _common.gru_variant(family, layer, reset_after)
    cell_params = _common.single(params, lay.name)
    flat = _layout.to_peer(lay, cell_params, reset_after=variant)
    state = nnx.state(cell, nnx.Param)
    current = _common.flatten(nnx.to_pure_dict(state))
    _check_shapes(lay.name, current, flat)
    nnx.replace_by_pure_dict(state, _common.to_jax(_common.unflatten(flat)))
    nnx.update(cell, state)
    return cell


def _unwrap(params):
    return params["params"] if set(params) == {"params"} else params


def _linen_family(flat: dict) -> str:
    roots = {k.split("/")[0] for k in flat}
    for family, layout in _tables.FLAX_LINEN.items():
        if roots == {s.path.split("/")[0] for s in layout.slots}:
            return family
    raise ValueError(
        f"params: expected the params of a Flax linen {SUPPORTED} (keys ii..ho, ir..hn "
        f"or i, h), got keys {sorted(roots)}"
    )


def _nnx_layout(cell):
    name = type(cell).__name__
    if name not in _tables.FLAX_NNX or not type(cell).__module__.startswith("flax.nnx"):
        raise TypeError(
            f"cell: expected a flax.nnx {SUPPORTED}, got {type(cell).__module__}.{name}"
        )
    lay = _tables.FLAX_NNX[name]
    return lay, lay.family


def _check_cell(cell, family) -> str | None:
    """The Elman activation of a Flax cell (None without a cell); checks the
    rest is what the layouts assume."""
    if cell is None:
        return None
    name = type(cell).__name__
    if LINEN_TYPES.get(name) != family:
        raise TypeError(f"cell: expected a Flax {SUPPORTED} holding a {family}, got {name}")
    act = getattr(getattr(cell, "activation_fn", None), "__name__", None)
    gate = getattr(getattr(cell, "gate_fn", None), "__name__", "sigmoid")
    allowed = ("tanh", "relu") if family == "elman" else ("tanh",)
    if act not in allowed or gate != "sigmoid" or getattr(cell, "residual", False):
        raise ValueError(
            f"cell: the Flax {name} has activation_fn={act!r}, gate_fn={gate!r}, "
            f"residual={getattr(cell, 'residual', False)}; supported: activation_fn in "
            f"{list(allowed)}, gate_fn 'sigmoid', residual False"
        )
    return act if family == "elman" else None


def _module(family, cell_params, activation):
    bias = "double" if "b_hh" in cell_params else ("single" if "b" in cell_params else "none")
    hidden = cell_params["w_hh"].shape[0]
    reset_after = True if family == "gru" else None
    spec = Spec(
        family, hidden, bias=bias, reset_after=reset_after, activation=activation, cell=True
    )
    return _common.make_module(spec)


def _check_shapes(name, current: dict, new: dict) -> None:
    if set(current) != set(new):
        raise ValueError(f"params: {name} holds {sorted(current)}, the params give {sorted(new)}")
    for k, v in new.items():
        if tuple(current[k].shape) != v.shape:
            raise ValueError(
                f"params: {name} {k} has shape {tuple(current[k].shape)}, the params give {v.shape}"
            )
