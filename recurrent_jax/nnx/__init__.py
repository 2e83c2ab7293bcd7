"""Flax NNX modules: thin wrappers over cells, the engine and layers.

Constructed eagerly in NNX's convention; a module's ``nnx.Param`` leaves
hold exactly the pure core's params (``rj.nnx.params(model)`` is that dict),
so NNX, linen and functional code share checkpoints and numerics::

    model = rj.nnx.LSTM(64, 128, num_layers=2, dropout=0.1, rngs=nnx.Rngs(0))
    ys = model(xs, seq_lengths=lengths)             # xs (B, T, 64)
    model.eval()                                    # dropout off
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

Options, defaults and meanings are those of every door
(``recurrent_jax.doors``), except that a module starts in training mode
(``deterministic=False``, as ``nnx.Dropout``) until ``model.eval()`` or
``nnx.view(model, deterministic=True)``; dropout, recurrent dropout and zoneout draw one
key per call from the module's ``rngs`` (the "dropout" stream), outside the
recurrence, or from ``rngs=`` given to the call.
"""

from recurrent_jax.nnx._modules import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    SimpleRNN,
    load_params,
    params,
)
from recurrent_jax.nnx._seq2seq import Seq2Seq

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "Bidirectional",
    "Seq2Seq",
    "SimpleRNN",
    "load_params",
    "params",
]
