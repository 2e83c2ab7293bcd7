"""Flax linen modules: thin wrappers over cells, ``unroll`` and layers.

A module's params are exactly the pure core's params (``layer.init``'s
dict), so functional and module code share checkpoints::

    model = rj.nn.LSTM(128, num_layers=2, bidirectional=True)
    params = model.init(key, xs, seq_lengths=lengths)["params"]
    ys = model.apply({"params": params}, xs, seq_lengths=lengths)

Randomness: dropout, recurrent dropout and zoneout draw from the "dropout"
RNG stream (``rngs={"dropout": key}``) when ``deterministic=False``.
"""

from recurrent_jax.nn._modules import GRU, LSTM, RNN, Bidirectional, SimpleRNN
from recurrent_jax.nn._seq2seq import Seq2Seq

__all__ = ["GRU", "LSTM", "RNN", "Bidirectional", "Seq2Seq", "SimpleRNN"]
