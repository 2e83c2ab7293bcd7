"""Sequence-to-sequence: encoders and bridges, attention, the attention
decoder, training-time decoding, inference decoding (greedy, sampling, beam
search; ``decoding``, ``beam``) and masked sequence losses.

Pure functions at the core (``make_seq2seq`` returns a ``Seq2SeqModel`` of
them); ``rj.nn.Seq2Seq`` is the flax.linen module over the same params.
"""

from recurrent_jax.seq2seq.attention import (
    Attention,
    Memory,
    additive,
    attend,
    concat,
    dot,
    general,
    make_attention,
    masked_softmax,
)
from recurrent_jax.seq2seq.beam import BeamDecoded, beam_search, gather_beams, tile_beams
from recurrent_jax.seq2seq.decoder import AttentionDecoder, DecoderState, attention_decoder
from recurrent_jax.seq2seq.decoding import Decoded, greedy_decode, sample_decode
from recurrent_jax.seq2seq.encoder import Bridge, layer_pairs, make_bridge, make_encoder
from recurrent_jax.seq2seq.losses import sequence_accuracy, sequence_cross_entropy, token_accuracy
from recurrent_jax.seq2seq.model import Encoded, Seq2SeqModel, decode, make_seq2seq, seq2seq
from recurrent_jax.seq2seq.training import (
    TrainingDecode,
    exponential_decay,
    inverse_sigmoid_decay,
    linear_decay,
    sampling_schedule,
    scheduled_sampling,
    teacher_forcing,
)

__all__ = [
    "Attention",
    "AttentionDecoder",
    "BeamDecoded",
    "Bridge",
    "Decoded",
    "DecoderState",
    "Encoded",
    "Memory",
    "Seq2SeqModel",
    "TrainingDecode",
    "additive",
    "attend",
    "attention_decoder",
    "beam_search",
    "concat",
    "decode",
    "dot",
    "exponential_decay",
    "gather_beams",
    "general",
    "greedy_decode",
    "inverse_sigmoid_decay",
    "layer_pairs",
    "linear_decay",
    "make_attention",
    "make_bridge",
    "make_encoder",
    "make_seq2seq",
    "masked_softmax",
    "sample_decode",
    "sampling_schedule",
    "scheduled_sampling",
    "seq2seq",
    "sequence_accuracy",
    "sequence_cross_entropy",
    "teacher_forcing",
    "tile_beams",
    "token_accuracy",
]
