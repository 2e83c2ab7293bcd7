"""PyTorch: nn.LSTM / GRU / RNN and LSTMCell / GRUCell / RNNCell."""

from __future__ import annotations

import re
from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.cells.base import LSTMCarry
from recurrent_jax.interop import _api, _common, _layout, _tables
from recurrent_jax.interop._common import Spec

MODES = {
    "LSTM": ("lstm", None),
    "GRU": ("gru", None),
    "RNN_TANH": ("elman", "tanh"),
    "RNN_RELU": ("elman", "relu"),
}
CELL_TYPES = {"LSTMCell": "lstm", "GRUCell": "gru", "RNNCell": "elman"}
SUPPORTED = "torch.nn.LSTM, GRU, RNN, LSTMCell, GRUCell, RNNCell or their state_dict()"


def suffix(spec: Spec, layer: int, direction: int) -> str:
    if spec.cell:
        return ""
    return f"_l{layer}" + ("_reverse" if direction else "")


def layout(spec: Spec) -> _layout.Layout:
    name = None
    if spec.cell:
        name = {
            "lstm": "torch.nn.LSTMCell",
            "gru": "torch.nn.GRUCell",
            "elman": "torch.nn.RNNCell",
        }[spec.family]
    return _tables.torch_layout(
        spec.family, bias=spec.bias != "none", proj=spec.proj_size is not None, name=name
    )


def from_torch(
    module_or_state_dict,
    *,
    batch_first: bool | None = None,
    nonlinearity: str | None = None,
    prefix: str = "",
    api: str = "linen",
):
    """A PyTorch recurrent module (or its state_dict) -> ``(layer, params)``,
    or with ``api="nnx"`` / ``"eqx"`` the same model as an ``rj.nnx`` /
    ``rj.eqx`` module holding the params.

    ``layer`` is an rj.nn module configured like the source, ``params`` its
    params, so ``layer.apply({"params": params}, x, seq_lengths=lengths)``
    gives PyTorch's outputs (zeros at padded steps, as ``pad_packed_sequence``):

    - nn.LSTM / GRU / RNN -> rj.nn.LSTM / GRU / SimpleRNN with the same
      hidden_size, num_layers, bidirectional, proj_size, dropout (between
      layers), bias ("double", or "none" for bias=False) and
      ``time_major = not batch_first``; params ``{"layer_k": cell}`` or
      ``{"layer_k": {"forward": cell, "backward": cell}}``. A module in eval
      mode gives ``deterministic=True``; in train mode with dropout > 0,
      pass ``deterministic=`` to ``apply`` (and a "dropout" rng).
    - nn.LSTMCell / GRUCell / RNNCell -> ``rj.nn.RNN(cell)`` (``layer.cell``
      is the rj Cell, for step-by-step use); params are the cell's own.

    Cell params: ``w_ih = weight_ih.T`` (D, G*H), ``w_hh = weight_hh.T``,
    ``b_ih``, ``b_hh``, ``w_hr = weight_hr.T`` (H, P).

    Args:
      module_or_state_dict: the module, or a ``state_dict()`` (its kind,
        sizes, layers, directions, bias and projection are read from its keys
        and shapes).
      batch_first: overrides the module's (state dicts default to False, as
        torch; cells to True, rj's batch-major layout).
      nonlinearity: "tanh" or "relu" for an RNN given as a state_dict.
      prefix: key prefix to strip from a state_dict ("encoder.rnn.").
      api: "linen" (``(rj.nn module, params)``), "nnx" (an ``rj.nnx``
        module; a module in eval mode gives ``deterministic=True``, else
        NNX's training mode) or "eqx" (an ``rj.eqx`` module; eval mode gives
        ``inference=True``).
    """
    spec, arrays, options = _read(module_or_state_dict, batch_first, nonlinearity, prefix)
    lay = layout(spec)
    cells = {}
    for i in range(spec.num_layers):
        for d in range(2 if spec.bidirectional else 1):
            cells[(i, d)] = _layout.from_peer(lay, arrays, suffix=suffix(spec, i, d))
    params = _common.pack(cells, spec.num_layers, spec.bidirectional, single_cell=spec.cell)
    return _api.with_api(api, _common.make_module(spec, **options), params)


def to_torch(params, module, *, layer=None, reset_after: bool | None = None):
    """Copies rj ``params`` into the PyTorch ``module``'s parameters in place
    and returns the module (nn.LSTM / GRU / RNN / LSTMCell / GRUCell /
    RNNCell). Shapes, layers and directions must match.

    ``layer`` (the rj module the params belong to) or ``reset_after`` states
    the GRU variant; PyTorch only computes reset-after GRUs. Raises
    ValueError for what the module cannot hold: biases in a bias=False module,
    a projection, peephole / layer-norm params, a reset-before GRU.
    """
    import torch

    spec = _module_spec(module)
    check_activation = spec.activation if spec.family == "elman" else None
    _common.check_layer(layer, spec.family, type(module).__name__, check_activation)
    variant = _common.gru_variant(spec.family, layer, reset_after)
    cells, num_layers, bidirectional = _common.unpack(params, f"torch.nn.{type(module).__name__}")
    if (num_layers, bidirectional) != (spec.num_layers, spec.bidirectional):
        raise ValueError(
            f"params: hold {num_layers} layer(s), bidirectional={bidirectional}; the "
            f"module has num_layers={spec.num_layers}, bidirectional={spec.bidirectional}"
        )
    lay = layout(spec)
    arrays = {}
    for (i, d), cell in cells.items():
        arrays |= _layout.to_peer(lay, cell, reset_after=variant, suffix=suffix(spec, i, d))
    named = dict(module.named_parameters())
    if set(named) != set(arrays):
        raise ValueError(f"params: give tensors {sorted(arrays)}, the module has {sorted(named)}")
    with torch.no_grad():
        for name, value in arrays.items():
            if tuple(named[name].shape) != value.shape:
                raise ValueError(
                    f"params: {name} has shape {value.shape} from the params, the module's is "
                    f"{tuple(named[name].shape)}"
                )
            named[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))
    return module


def _module_spec(module) -> Spec:
    import torch

    name = type(module).__name__
    if isinstance(module, torch.nn.RNNBase) and module.mode in MODES:
        family, act = MODES[module.mode]
        return Spec(
            family,
            module.hidden_size,
            num_layers=module.num_layers,
            bidirectional=module.bidirectional,
            proj_size=getattr(module, "proj_size", 0) or None,
            bias="double" if module.bias else "none",
            reset_after=True if family == "gru" else None,
            activation=act,
        )
    if isinstance(module, torch.nn.RNNCellBase):
        family = next(
            (f for t, f in CELL_TYPES.items() if isinstance(module, getattr(torch.nn, t))), None
        )
        if family is not None:
            act = getattr(module, "nonlinearity", None) if family == "elman" else None
            return Spec(
                family,
                module.hidden_size,
                bias="double" if module.bias else "none",
                reset_after=True if family == "gru" else None,
                activation=act,
                cell=True,
            )
    raise TypeError(f"module: expected {SUPPORTED}, got {name}")


def _read(source, batch_first, nonlinearity, prefix):
    import torch

    if isinstance(source, torch.nn.Module):
        spec = _module_spec(source)
        if spec.family == "elman" and nonlinearity not in (None, spec.activation):
            raise ValueError(
                f"nonlinearity: the module uses {spec.activation!r}, got {nonlinearity!r}"
            )
        arrays = {k: _common.numpy(v) for k, v in source.state_dict().items()}
        if batch_first is None:
            batch_first = True if spec.cell else source.batch_first
        dropout = 0.0 if spec.cell else source.dropout
        deterministic = None if source.training else True
    elif isinstance(source, Mapping):
        arrays = {
            k[len(prefix) :]: _common.numpy(v) for k, v in source.items() if k.startswith(prefix)
        }
        spec = _state_dict_spec(arrays, nonlinearity)
        if batch_first is None:
            batch_first = spec.cell
        dropout, deterministic = 0.0, None
    else:
        raise TypeError(f"module_or_state_dict: expected {SUPPORTED}, got {type(source).__name__}")
    options = {"time_major": not batch_first, "deterministic": deterministic}
    if not spec.cell:
        options["dropout"] = dropout
    return spec, arrays, options


def _state_dict_spec(arrays: dict, nonlinearity) -> Spec:
    cell = "weight_ih" in arrays
    first = "" if cell else "_l0"
    if f"weight_ih{first}" not in arrays:
        raise ValueError(
            f"state_dict: expected the keys of {SUPPORTED} (weight_ih_l0, weight_hh_l0, ... "
            f"or weight_ih, ... for a cell), got {sorted(arrays)[:8]}"
        )
    layers = {
        int(m.group(1)) for k in arrays if (m := re.fullmatch(r"weight_ih_l(\d+)(_reverse)?", k))
    }
    proj = arrays.get(f"weight_hr{first}")
    hidden = proj.shape[1] if proj is not None else arrays[f"weight_hh{first}"].shape[1]
    gates = arrays[f"weight_ih{first}"].shape[0] // hidden
    family = {4: "lstm", 3: "gru", 1: "elman"}.get(gates)
    if family is None:
        raise ValueError(
            f"state_dict: weight_ih has {gates} gate blocks of H={hidden}; expected 4, 3 or 1"
        )
    if family == "elman" and nonlinearity not in (None, "tanh", "relu"):
        raise ValueError(f"nonlinearity: expected 'tanh' or 'relu', got {nonlinearity!r}")
    return Spec(
        family,
        hidden,
        num_layers=1 if cell else len(layers),
        bidirectional=f"weight_ih{first}_reverse" in arrays,
        proj_size=None if proj is None else proj.shape[0],
        bias="double" if f"bias_ih{first}" in arrays else "none",
        reset_after=True if family == "gru" else None,
        activation=(nonlinearity or "tanh") if family == "elman" else None,
        cell=cell,
    )


# --- states: h_0 / c_0 in, h_n / c_n out ----------------------------------


def to_torch_state(carries):
    """rj final carries -> PyTorch's ``h_n`` (and ``c_n`` for an LSTM).

    ``carries``: the tuple (one per layer) an rj.nn stack returns with
    ``return_carry=True``; a bidirectional layer's entry is (forward,
    backward). Returns h_n (D·L, *batch, H or P) ordered [l0 fwd, l0 bwd,
    l1 fwd, ...], or ``(h_n, c_n)`` when the carries are ``LSTMCarry``.
    """
    flat = []
    for carry in (
        carries if isinstance(carries, (tuple, list)) and not _is_carry(carries) else (carries,)
    ):
        flat += [carry] if _is_carry(carry) else list(carry)
    if isinstance(flat[0], LSTMCarry):
        return jnp.stack([c.h for c in flat]), jnp.stack([c.c for c in flat])
    return jnp.stack(flat)


def _is_carry(x) -> bool:
    return isinstance(x, LSTMCarry) or hasattr(x, "shape")


def from_torch_state(module, h_0, c_0=None):
    """PyTorch's ``h_0`` (D·L, *batch, H) [and ``c_0``] -> the ``initial_carry``
    tuple of an rj.nn stack. ``module``: the torch module or the rj.nn module
    (anything with ``num_layers`` and ``bidirectional``)."""
    if not (hasattr(module, "num_layers") and hasattr(module, "bidirectional")):
        _checks.fail_type(
            "module", "a torch RNN module or an rj.nn stack (num_layers, bidirectional)", module
        )
    num_layers, num_dirs = module.num_layers, 2 if module.bidirectional else 1
    h = jnp.asarray(_common.numpy(h_0))
    c = None if c_0 is None else jnp.asarray(_common.numpy(c_0))
    if h.shape[0] != num_layers * num_dirs:
        raise ValueError(
            f"h_0: expected a leading axis of num_layers*num_directions = "
            f"{num_layers * num_dirs}, got shape {h.shape}"
        )
    one = (lambda k: LSTMCarry(h[k], c[k])) if c is not None else (lambda k: h[k])
    layers = []
    for i in range(num_layers):
        pair = tuple(one(num_dirs * i + d) for d in range(num_dirs))
        layers.append(pair if num_dirs == 2 else pair[0])
    return tuple(layers)
