"""Shared pieces of the converters: rj param structures, rj modules built
for a source, and what an rj module says about its params."""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import cells, nn
from recurrent_jax.layers import INITIAL_CARRY

FAMILY_MODULES = {"lstm": nn.LSTM, "gru": nn.GRU, "elman": nn.SimpleRNN}
DIRECTIONS = ("forward", "backward")


class Spec(NamedTuple):
    """What the params of one recurrent network are: enough to build the rj
    module and to check a target against.

    family: "lstm", "gru" or "elman"; hidden_size H; proj_size P or None;
    bias: "double", "single" or "none"; reset_after (GRU) / activation (Elman);
    num_layers, bidirectional; cell: a single cell (rj.nn.RNN(cell)).
    """

    family: str
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int | None = None
    bias: str = "double"
    reset_after: bool | None = None
    activation: str | None = None
    cell: bool = False


def numpy(x) -> np.ndarray:
    """Any array (NumPy, JAX, torch tensor, Keras variable) as NumPy."""
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    if hasattr(x, "value") and not isinstance(x, np.ndarray):
        x = x.value
    return np.asarray(x)


def to_jax(tree):
    return jax.tree_util.tree_map(jnp.asarray, tree)


def count_params(params) -> int:
    """Number of scalars in a params pytree (Keras's ``count_params``); the
    leaves may be arrays or ``jax.ShapeDtypeStruct`` (from ``jax.eval_shape``)."""
    return sum(
        math.prod(getattr(leaf, "shape", np.shape(leaf)))
        for leaf in jax.tree_util.tree_leaves(params)
    )


def flatten(tree: Mapping, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        path = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out |= flatten(v, path + "/")
        else:
            out[path] = v
    return out


def unflatten(flat: Mapping) -> dict:
    out = {}
    for path, v in flat.items():
        *head, last = path.split("/")
        node = out
        for k in head:
            node = node.setdefault(k, {})
        node[last] = v
    return out


# --- rj param structures -------------------------------------------------


def unpack(params, what: str) -> tuple[dict, int, bool]:
    """rj params -> ({(layer, direction): cell_params}, num_layers, bidirectional).

    Accepts a stack ``{"layer_0": ...}`` (rj.nn.LSTM/GRU/SimpleRNN), a pair
    ``{"forward", "backward"}`` (rj.nn.Bidirectional) or one cell's params
    (rj.nn.RNN), optionally wrapped as ``{"params": ...}``.
    """
    if isinstance(params, Mapping) and set(params) == {"params"}:
        params = params["params"]
    if not isinstance(params, Mapping):
        raise TypeError(f"params: expected a dict of rj params, got {type(params).__name__}")
    if INITIAL_CARRY in _all_keys(params):
        raise ValueError(
            f"params: {what} has no slot for a learned initial carry "
            "('initial_carry', from learn_initial_carry=True); pass it as the "
            "initial state instead"
        )
    stacked = "layer_0" in params
    layers = [params[f"layer_{i}"] for i in range(len(params))] if stacked else [params]
    cells_, bidirectional = {}, "forward" in layers[0]
    for i, lyr in enumerate(layers):
        if ("forward" in lyr) != bidirectional:
            raise ValueError("params: expected every layer to have the same directions")
        for d, name in enumerate(DIRECTIONS if bidirectional else ("forward",)):
            cells_[(i, d)] = lyr[name] if bidirectional else lyr
    return cells_, len(layers), bidirectional


def _all_keys(tree) -> set:
    keys = set()
    for k, v in tree.items():
        keys.add(k)
        if isinstance(v, Mapping):
            keys |= _all_keys(v)
    return keys


def pack(cells_: dict, num_layers: int, bidirectional: bool, single_cell: bool = False) -> dict:
    """Inverse of ``unpack`` for a stack (or one cell's params)."""
    cells_ = {k: to_jax(v) for k, v in cells_.items()}
    if single_cell:
        return cells_[(0, 0)]
    if bidirectional:
        return {
            f"layer_{i}": {n: cells_[(i, d)] for d, n in enumerate(DIRECTIONS)}
            for i in range(num_layers)
        }
    return {f"layer_{i}": cells_[(i, 0)] for i in range(num_layers)}


def single(params, what: str) -> dict:
    """The params of one cell (rj.nn.RNN(cell), or a one-layer one-way stack)."""
    cells_, num_layers, bidirectional = unpack(params, what)
    if num_layers != 1 or bidirectional:
        raise ValueError(
            f"params: {what} holds one cell, but the params hold {num_layers} "
            f"layer(s){', bidirectional' if bidirectional else ''}"
        )
    return cells_[(0, 0)]


# --- rj modules ------------------------------------------------------------

# Variants of cells built here, keyed by their step function: a Cell records
# no options, and to_* functions check GRU variants against them.
_CELL_SPECS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def make_cell(spec: Spec):
    options = {"bias": spec.bias}
    if spec.family == "lstm":
        cell = cells.lstm(spec.hidden_size, proj_size=spec.proj_size, **options)
    elif spec.family == "gru":
        cell = cells.gru(spec.hidden_size, reset_after=spec.reset_after is not False, **options)
    else:
        cell = cells.elman(spec.hidden_size, activation=spec.activation or "tanh", **options)
    _CELL_SPECS[cell.step] = spec
    return cell


def make_module(spec: Spec, **module_options):
    """The rj.nn module for ``spec``: rj.nn.RNN(cell) for a single cell,
    else rj.nn.LSTM / GRU / SimpleRNN."""
    if spec.cell:
        return nn.RNN(make_cell(spec), **module_options)
    options = dict(
        num_layers=spec.num_layers,
        bidirectional=spec.bidirectional,
        bias=spec.bias,
        **module_options,
    )
    if spec.family == "lstm":
        options["proj_size"] = spec.proj_size
    elif spec.family == "gru":
        options["reset_after"] = spec.reset_after is not False
    else:
        options["activation"] = spec.activation or "tanh"
    return FAMILY_MODULES[spec.family](spec.hidden_size, **options)


def describe(layer) -> dict | None:
    """{"family", "reset_after", "activation"} of an rj.nn module (or Cell)
    given as ``layer=``; None when nothing is given."""
    if layer is None:
        return None
    if isinstance(layer, nn.Bidirectional):
        layer = layer.forward
    for family, module in FAMILY_MODULES.items():
        if isinstance(layer, module):
            return {
                "family": family,
                "reset_after": getattr(layer, "reset_after", None),
                "activation": getattr(layer, "activation", None),
            }
    cell = getattr(layer, "cell", layer)
    step = getattr(cell, "step", None)
    spec = _CELL_SPECS.get(step) if callable(step) else None
    if spec is not None:
        return {
            "family": spec.family,
            "reset_after": spec.reset_after,
            "activation": spec.activation,
        }
    name = getattr(cell, "name", None)
    if name in ("lstm", "gru", "elman"):
        return {"family": name, "reset_after": None, "activation": None}
    raise TypeError(
        "layer: expected an rj.nn.LSTM/GRU/SimpleRNN, rj.nn.RNN, rj.nn.Bidirectional or "
        f"rj Cell, got {type(layer).__name__}"
    )


def check_layer(layer, family: str, target: str, activation=None) -> bool | None:
    """Checks ``layer`` (if given) against the target; returns its GRU
    ``reset_after`` (None when unknown)."""
    info = describe(layer)
    if info is None:
        return None
    if info["family"] != family:
        raise ValueError(f"layer: {target} holds a {family} but the rj layer is a {info['family']}")
    act = info["activation"]
    if activation is not None and act is not None and act != activation:
        raise ValueError(f"layer: {target} uses activation {activation!r}, the rj layer {act!r}")
    return info["reset_after"]


def gru_variant(family: str, layer, reset_after: bool | None) -> bool | None:
    """The GRU variant of the params being converted: explicit ``reset_after``,
    else the rj ``layer``'s, else rj's default (True, as PyTorch and cuDNN)."""
    if family != "gru":
        return None
    if reset_after is not None:
        return reset_after
    info = describe(layer)
    if info is not None and info["reset_after"] is not None:
        return info["reset_after"]
    return True
