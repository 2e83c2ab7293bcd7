"""recurrent_jax: recurrent networks in JAX, pure cells to sweeps."""

from recurrent_jax import cells
from recurrent_jax.cells import Cell, LSTMCarry
from recurrent_jax.sequence import unroll

__all__ = ["Cell", "LSTMCarry", "cells", "unroll"]
__version__ = "0.1.0"
