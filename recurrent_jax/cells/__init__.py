"""Recurrent cells: constructors returning ``Cell`` values of pure functions."""

from recurrent_jax.cells.base import Cell, CellOptions, LSTMCarry, with_defaults
from recurrent_jax.cells.elman import elman
from recurrent_jax.cells.gru import gru
from recurrent_jax.cells.lru import lru
from recurrent_jax.cells.lstm import lstm
from recurrent_jax.cells.mgu import mgu
from recurrent_jax.cells.mingru import mingru, minlstm
from recurrent_jax.cells.rglru import rglru
from recurrent_jax.cells.xlstm import MLSTMCarry, SLSTMCarry, mlstm, mlstm_parallel, slstm

__all__ = [
    "Cell",
    "CellOptions",
    "LSTMCarry",
    "MLSTMCarry",
    "SLSTMCarry",
    "elman",
    "gru",
    "lru",
    "lstm",
    "mgu",
    "mlstm",
    "mlstm_parallel",
    "mingru",
    "minlstm",
    "rglru",
    "slstm",
    "with_defaults",
]
