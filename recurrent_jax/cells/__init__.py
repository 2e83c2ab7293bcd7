"""Recurrent cells: constructors returning ``Cell`` values of pure functions."""

from recurrent_jax.cells.base import Cell, CellOptions, LSTMCarry, with_defaults
from recurrent_jax.cells.elman import elman
from recurrent_jax.cells.gru import gru
from recurrent_jax.cells.lstm import lstm
from recurrent_jax.cells.mgu import mgu

__all__ = [
    "Cell",
    "CellOptions",
    "LSTMCarry",
    "elman",
    "gru",
    "lstm",
    "mgu",
    "with_defaults",
]
