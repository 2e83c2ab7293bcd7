"""Keras 3: LSTM, GRU (reset_after True / False), SimpleRNN, Bidirectional."""

from __future__ import annotations

from recurrent_jax import nn
from recurrent_jax.interop import _api, _common, _layout, _tables
from recurrent_jax.interop._common import Spec

TYPES = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "elman"}
SUPPORTED = "keras.layers.LSTM, GRU, SimpleRNN or Bidirectional of them"
SLOTS = ("kernel", "recurrent_kernel", "bias")


def from_keras(keras_layer, *, bias: str | None = None, api: str = "linen"):
    """A built Keras 3 recurrent layer -> ``(layer, params)``, or with
    ``api="nnx"`` / ``"eqx"`` the same model as an ``rj.nnx`` / ``rj.eqx``
    module holding the params.

    - LSTM / GRU / SimpleRNN -> rj.nn.LSTM / GRU / SimpleRNN, one layer,
      params ``{"layer_0": cell}``: LSTM and SimpleRNN and GRU(reset_after=
      False) with ``bias="single"`` (``b`` = Keras's bias; GRU blocks z,r,h
      reordered to r,z,n), GRU(reset_after=True) with ``bias="double"``
      (``b_ih``, ``b_hh`` = rows 0 and 1 of Keras's (2, 3H) bias).
      ``return_sequences`` is copied; ``return_state`` becomes ``return_carry``.
    - Bidirectional(...) -> the same with ``bidirectional=True`` and its
      ``merge_mode``; params ``{"layer_0": {"forward", "backward"}}``. A
      backward layer of another kind gives rj.nn.Bidirectional(cell, cell).
    - ``go_backwards=True`` alone -> ``rj.nn.RNN(cell, reverse=True)`` (cell
      params): its outputs stay aligned with the inputs, where Keras returns
      them in processing order (``ys[..., ::-1, :]`` for full-length rows).

    Padding: with a mask, Keras repeats the last valid output at padded steps
    (``zero_output_for_mask=False``); rj outputs zeros there. Final states
    and valid outputs agree. ``bias`` forces "single" or "double".
    """
    return _api.with_api(api, *_from_keras(keras_layer, bias))


def _from_keras(keras_layer, bias):
    if type(keras_layer).__name__ == "Bidirectional":
        return _from_bidirectional(keras_layer, bias)
    spec, options = _spec(keras_layer, bias)
    params = _common.pack(
        {(0, 0): _read(keras_layer, spec, bias)}, 1, False, single_cell=keras_layer.go_backwards
    )
    if keras_layer.go_backwards:
        cell = _common.make_cell(spec)
        return nn.RNN(cell, reverse=True, **_cell_rates(options)), params
    return _common.make_module(spec, **options), params


def to_keras(params, keras_layer, *, layer=None, reset_after: bool | None = None):
    """Assigns rj ``params`` to the variables of a built Keras layer (LSTM,
    GRU, SimpleRNN or Bidirectional of them) in place and returns it.

    The GRU variant of the params comes from ``reset_after`` or ``layer``
    (the rj module they belong to), else rj's default reset_after=True: a
    Keras GRU(reset_after=False) needs one of them to say False. Raises
    ValueError when the Keras layer cannot hold the params (a bias in a
    use_bias=False layer, a nonzero b_hn in a one-bias GRU, a projection).
    """
    if type(keras_layer).__name__ == "Bidirectional":
        cells, num_layers, bidirectional = _common.unpack(params, "keras Bidirectional")
        if num_layers != 1 or not bidirectional:
            raise ValueError(
                f"params: keras Bidirectional holds one bidirectional layer, the params "
                f"hold {num_layers} layer(s), bidirectional={bidirectional}"
            )
        backward = layer.backward or layer.forward if isinstance(layer, nn.Bidirectional) else layer
        pairs = (
            (keras_layer.forward_layer, cells[(0, 0)], layer),
            (keras_layer.backward_layer, cells[(0, 1)], backward),
        )
    else:
        pairs = (
            (keras_layer, _common.single(params, f"keras {type(keras_layer).__name__}"), layer),
        )
    converted = []  # all checks pass before any variable changes
    for target, cell, rj_layer in pairs:
        spec, _ = _spec(target, None)
        _common.check_layer(
            rj_layer, spec.family, f"keras {type(target).__name__}", spec.activation
        )
        variant = _common.gru_variant(spec.family, rj_layer, reset_after)
        arrays = _layout.to_peer(_layout_of(target, spec), cell, reset_after=variant)
        _check_shapes(target, arrays)
        converted.append((target, arrays))
    for target, arrays in converted:
        for name, value in arrays.items():
            var = getattr(target.cell, name)
            var.assign(value.astype(var.dtype))
    return keras_layer


def _from_bidirectional(keras_layer, bias):
    fwd, bwd = keras_layer.forward_layer, keras_layer.backward_layer
    (spec_f, options), (spec_b, _) = _spec(fwd, bias), _spec(bwd, bias)
    cells = {(0, 0): _read(fwd, spec_f, bias), (0, 1): _read(bwd, spec_b, bias)}
    merge_mode = keras_layer.merge_mode
    options |= dict(
        return_sequences=keras_layer.return_sequences, return_carry=keras_layer.return_state
    )
    if spec_f == spec_b:
        params = _common.pack(cells, 1, True)
        module = _common.make_module(
            spec_f._replace(bidirectional=True), merge_mode=merge_mode, **options
        )
        return module, params
    params = {name: _common.to_jax(cells[(0, d)]) for d, name in enumerate(_common.DIRECTIONS)}
    cell_f, cell_b = _common.make_cell(spec_f), _common.make_cell(spec_b)
    return nn.Bidirectional(cell_f, cell_b, merge_mode=merge_mode, **_cell_rates(options)), params


def _cell_rates(options: dict) -> dict:
    """Options of rj.nn.RNN / Bidirectional, whose ``dropout`` is the input one."""
    options = dict(options)
    options["dropout"] = options.pop("input_dropout")
    return options


def _spec(keras_layer, bias) -> tuple[Spec, dict]:
    name = type(keras_layer).__name__
    if name not in TYPES:
        raise TypeError(f"keras_layer: expected {SUPPORTED}, got {name}")
    if not keras_layer.built:
        raise ValueError(
            f"keras_layer: the {name} is not built; call it on an input or build(input_shape) first"
        )
    if keras_layer.stateful:
        raise ValueError(
            "keras_layer: stateful=True is not supported; pass the state as initial_carry instead"
        )
    family, cell = TYPES[name], keras_layer.cell
    activation = _check_activations(name, family, cell)
    reset_after = getattr(cell, "reset_after", True) if family == "gru" else None
    natural = (
        "none" if not cell.use_bias else ("double" if family == "gru" and reset_after else "single")
    )
    spec = Spec(
        family,
        cell.units,
        bias=bias or natural,
        reset_after=reset_after,
        activation=activation if family == "elman" else None,
    )
    options = dict(
        return_sequences=keras_layer.return_sequences,
        return_carry=keras_layer.return_state,
        input_dropout=cell.dropout,
        recurrent_dropout=cell.recurrent_dropout,
    )
    return spec, options


def _check_activations(name, family, cell) -> str:
    """The activation's name; rj's LSTM/GRU modules use tanh and sigmoid."""
    activation = _activation(cell.activation)
    allowed = ("tanh", "relu") if family == "elman" else ("tanh",)
    problems = (
        [] if activation in allowed else [f"activation={activation!r} (supported: {allowed})"]
    )
    if family != "elman" and _activation(cell.recurrent_activation) != "sigmoid":
        problems.append(
            f"recurrent_activation={_activation(cell.recurrent_activation)!r} "
            "(supported: 'sigmoid')"
        )
    if problems:
        raise ValueError(f"keras_layer: the {name} has {', '.join(problems)}")
    return activation


def _activation(fn) -> str:
    import keras

    return keras.activations.serialize(fn) if callable(fn) else str(fn)


def _layout_of(keras_layer, spec: Spec) -> _layout.Layout:
    cell = keras_layer.cell
    return _tables.keras_layout(
        spec.family, use_bias=cell.use_bias, reset_after=spec.reset_after is not False
    )


def _read(keras_layer, spec: Spec, bias) -> dict:
    cell = keras_layer.cell
    arrays = {
        k: _common.numpy(getattr(cell, k)) for k in SLOTS if getattr(cell, k, None) is not None
    }
    return _layout.from_peer(_layout_of(keras_layer, spec), arrays, bias=bias)


def _check_shapes(keras_layer, arrays: dict) -> None:
    for name, value in arrays.items():
        var = getattr(keras_layer.cell, name)
        if tuple(var.shape) != value.shape:
            raise ValueError(
                f"params: keras {type(keras_layer).__name__} {name} has shape "
                f"{tuple(var.shape)}, the params give {value.shape}"
            )
