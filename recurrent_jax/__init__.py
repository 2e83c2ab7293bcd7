"""recurrent_jax: recurrent networks in JAX, pure cells to sweeps."""

from recurrent_jax import backends, cells, initializers, layers, online
from recurrent_jax.cells import Cell, LSTMCarry
from recurrent_jax.engine import Engine
from recurrent_jax.layers import Layer, bidirectional, layer, stack
from recurrent_jax.mamba import MambaCarry, mamba_block
from recurrent_jax.packing import Packed, bucket_by_length, pack, unpack
from recurrent_jax.sequence import length_mask, unroll
from recurrent_jax.truncated import truncated_unroll

__all__ = [
    "Cell",
    "Engine",
    "LSTMCarry",
    "Layer",
    "MambaCarry",
    "Packed",
    "backends",
    "bidirectional",
    "bucket_by_length",
    "cells",
    "data",
    "initializers",
    "interop",
    "layer",
    "layers",
    "length_mask",
    "mamba_block",
    "nn",
    "online",
    "pack",
    "stack",
    "sweep",
    "train",
    "truncated_unroll",
    "unpack",
    "unroll",
]
__version__ = "0.1.0"


# The front doors, seq2seq, interop, the tasks, training and sweeps load on
# first use, so that code using the cells and layers alone never imports
# flax, orbax or ml_collections (equinox is an extra).
_LAZY = ("nn", "nnx", "eqx", "seq2seq", "interop", "data", "train", "sweep")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f"recurrent_jax.{name}")
    raise AttributeError(f"module 'recurrent_jax' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])
