"""The flat cuDNN weight vector of ``jax.experimental.rnn.lstm``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from recurrent_jax.interop import _common, _layout, _tables
from recurrent_jax.interop._common import Spec


def to_cudnn(params) -> jnp.ndarray:
    """rj LSTM params (rj.nn.LSTM, any layers and directions) -> the flat
    vector ``jax.experimental.rnn.lstm`` takes.

    Layout: for each pseudo-layer (l0 fwd, l0 bwd, l1 fwd, ...) ``W_ih.ravel(),
    W_hh.ravel()`` in PyTorch's (4H, ·) shapes, then for each pseudo-layer
    ``b_ih, b_hh``. A single-bias LSTM gives ``b_hh = 0``, a bias-free one
    zeros; a projection (proj_size) has no place and raises ValueError.
    """
    cells, num_layers, bidirectional = _common.unpack(params, _tables.CUDNN.name)
    arrays = {}
    for (i, d), cell in cells.items():
        arrays |= _layout.to_peer(_tables.CUDNN, cell, suffix=_suffix(i, d))
    order = _order(num_layers, bidirectional)
    return jnp.asarray(np.concatenate([arrays[k].ravel() for k in order]))


def from_cudnn(
    weights, input_size: int, hidden_size: int, num_layers: int = 1, bidirectional: bool = False
):
    """The flat vector of ``jax.experimental.rnn.lstm`` -> ``(rj.nn.LSTM, params)``
    (``bias="double"``, batch-major as jax.experimental.rnn)."""
    weights = _common.numpy(weights).ravel()
    num_dirs = 2 if bidirectional else 1
    shapes = {}
    for i in range(num_layers):
        for d in range(num_dirs):
            s, rows = _suffix(i, d), input_size if i == 0 else num_dirs * hidden_size
            shapes |= {
                f"weight_ih{s}": (4 * hidden_size, rows),
                f"weight_hh{s}": (4 * hidden_size, hidden_size),
                f"bias_ih{s}": (4 * hidden_size,),
                f"bias_hh{s}": (4 * hidden_size,),
            }
    order = _order(num_layers, bidirectional)
    sizes = [int(np.prod(shapes[k])) for k in order]
    if weights.size != sum(sizes):
        raise ValueError(
            f"weights: an LSTM with input_size={input_size}, hidden_size={hidden_size}, "
            f"num_layers={num_layers}, bidirectional={bidirectional} has {sum(sizes)} "
            f"weights, got {weights.size}"
        )
    pieces = np.split(weights, np.cumsum(sizes)[:-1])
    arrays = {k: p.reshape(shapes[k]) for k, p in zip(order, pieces, strict=True)}
    cells = {
        (i, d): _layout.from_peer(_tables.CUDNN, arrays, suffix=_suffix(i, d))
        for i in range(num_layers)
        for d in range(num_dirs)
    }
    spec = Spec(
        "lstm", hidden_size, num_layers=num_layers, bidirectional=bidirectional, bias="double"
    )
    return _common.make_module(spec), _common.pack(cells, num_layers, bidirectional)


def _suffix(layer, direction) -> str:
    return f"_l{layer}" + ("_reverse" if direction else "")


def _order(num_layers, bidirectional) -> list:
    pseudo = [_suffix(i, d) for i in range(num_layers) for d in range(2 if bidirectional else 1)]
    return [
        k.format(l=s)
        for keys in (_tables.CUDNN_WEIGHTS, _tables.CUDNN_BIASES)
        for s in pseudo
        for k in keys
    ]
