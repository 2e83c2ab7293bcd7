"""recurrent_jax: recurrent networks in JAX, pure cells to sweeps."""

from recurrent_jax import backends, cells, initializers, interop, layers, nn
from recurrent_jax import seq2seq as seq2seq
from recurrent_jax.cells import Cell, LSTMCarry
from recurrent_jax.engine import Engine
from recurrent_jax.layers import Layer, bidirectional, layer, stack
from recurrent_jax.sequence import unroll
from recurrent_jax.truncated import truncated_unroll

__all__ = [
    "Cell",
    "Engine",
    "LSTMCarry",
    "Layer",
    "backends",
    "bidirectional",
    "cells",
    "initializers",
    "interop",
    "layer",
    "layers",
    "nn",
    "stack",
    "truncated_unroll",
    "unroll",
]
__version__ = "0.1.0"


def __getattr__(name):
    # The NNX and Equinox doors load on first use: equinox is an extra.
    if name in ("nnx", "eqx"):
        import importlib

        return importlib.import_module(f"recurrent_jax.{name}")
    raise AttributeError(f"module 'recurrent_jax' has no attribute {name!r}")
