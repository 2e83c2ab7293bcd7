"""Recurrent cells: constructors returning ``Cell`` values of pure functions."""

from recurrent_jax.cells._elman import elman
from recurrent_jax.cells._gru import gru
from recurrent_jax.cells._linoss import linoss
from recurrent_jax.cells._lru import lru
from recurrent_jax.cells._lstm import lstm
from recurrent_jax.cells._mgu import mgu
from recurrent_jax.cells._mingru import mingru, minlstm
from recurrent_jax.cells._rglru import rglru
from recurrent_jax.cells._s4d import s4d
from recurrent_jax.cells._s5 import s5
from recurrent_jax.cells._s6 import s6
from recurrent_jax.cells.base import Cell, CellOptions, LSTMCarry, with_defaults
from recurrent_jax.cells.conv import conv_gru, conv_lstm
from recurrent_jax.cells.xlstm import MLSTMCarry, SLSTMCarry, mlstm, mlstm_parallel, slstm

REGISTRY = {
    "elman": elman,
    "lstm": lstm,
    "gru": gru,
    "mgu": mgu,
    "mingru": mingru,
    "minlstm": minlstm,
    "lru": lru,
    "rglru": rglru,
    "s4d": s4d,
    "s5": s5,
    "linoss": linoss,
    "s6": s6,
}
"""The families configs and the seq2seq builder name: ``name(hidden_size, **options)``."""


CONV_REGISTRY = {"conv_lstm": conv_lstm, "conv_gru": conv_gru}
"""Convolutional families: ``name(features, kernel_size, spatial_dims=S, **options)``."""


def declares(family, field: str) -> bool:
    """Whether the cells of ``family`` have the optional ``Cell`` field
    ``field`` (``"linear"``, ``"time_invariant"``, ``"selective"``): a
    ``REGISTRY`` name, or a constructor ``hidden_size -> Cell``."""
    if isinstance(family, str):
        return family in REGISTRY and getattr(REGISTRY[family](1), field) is not None
    return getattr(family(1), field) is not None


def linear_in_carry(family) -> bool:
    """Whether the cells of ``family`` have ``Cell.linear`` (run with the
    parallel-in-time backends)."""
    return declares(family, "linear")


__all__ = [
    "CONV_REGISTRY",
    "REGISTRY",
    "Cell",
    "CellOptions",
    "LSTMCarry",
    "MLSTMCarry",
    "SLSTMCarry",
    "conv_gru",
    "conv_lstm",
    "elman",
    "gru",
    "declares",
    "linear_in_carry",
    "linoss",
    "lru",
    "lstm",
    "mgu",
    "mlstm",
    "mlstm_parallel",
    "mingru",
    "minlstm",
    "rglru",
    "s4d",
    "s5",
    "s6",
    "slstm",
    "with_defaults",
]
