"""Equinox modules: thin wrappers over cells, the engine and layers.

Fields hold exactly the pure core's params (``model.params``), so Equinox,
Flax and functional code share checkpoints and numerics. Inputs are batched,
``(*batch, T, D)``; dropout, recurrent dropout and zoneout take an explicit
``key`` per call and are switched off by ``eqx.nn.inference_mode``::

    model = rj.eqx.LSTM(64, 128, num_layers=2, dropout=0.1, key=key)
    ys = model(xs, seq_lengths=lengths, key=dropout_key)   # xs (B, T, 64)
    ys = eqx.nn.inference_mode(model)(xs, seq_lengths=lengths)

Options, defaults and meanings are those of every door
(``recurrent_jax.doors``); ``inference`` plays the part of the other doors'
``deterministic``.
"""

from recurrent_jax.eqx._modules import (
    GRU,
    LSTM,
    RNN,
    Bidirectional,
    SimpleRNN,
    load_params,
)
from recurrent_jax.eqx._seq2seq import Seq2Seq

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Seq2Seq", "SimpleRNN", "load_params"]
