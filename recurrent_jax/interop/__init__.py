"""Weights to and from PyTorch, Keras 3, Flax, Equinox, Haiku and cuDNN.

Every converter is a table of the peer's weight layout (``_tables.py``) read
by one generic pair of maps (``_layout.to_peer`` / ``_layout.from_peer``):
transposes, gate-block reorders, sign flips, bias sums and splits and the
+1 forget-bias shift. ``from_*`` return ``(layer, params)``: an rj.nn module
configured like the source and its params; ``to_*`` write rj params into a
target. Peers are imported only when their converter is called.
"""

from recurrent_jax.interop._common import count_params
from recurrent_jax.interop._conv import from_flax_conv_lstm, from_keras_conv_lstm
from recurrent_jax.interop._cudnn import from_cudnn, to_cudnn
from recurrent_jax.interop._equinox import from_equinox, to_equinox
from recurrent_jax.interop._flax import from_flax_linen, from_flax_nnx, to_flax_linen, to_flax_nnx
from recurrent_jax.interop._haiku import from_haiku, to_haiku
from recurrent_jax.interop._keras import from_keras, to_keras
from recurrent_jax.interop._layout import Layout, Slot, from_peer, to_peer
from recurrent_jax.interop._torch import from_torch, from_torch_state, to_torch, to_torch_state

__all__ = [
    "Layout",
    "Slot",
    "count_params",
    "from_cudnn",
    "from_equinox",
    "from_flax_conv_lstm",
    "from_flax_linen",
    "from_flax_nnx",
    "from_haiku",
    "from_keras",
    "from_keras_conv_lstm",
    "from_peer",
    "from_torch",
    "from_torch_state",
    "to_cudnn",
    "to_equinox",
    "to_flax_linen",
    "to_flax_nnx",
    "to_haiku",
    "to_keras",
    "to_peer",
    "to_torch",
    "to_torch_state",
]
