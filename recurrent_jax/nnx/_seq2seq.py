"""``rj.nnx.Seq2Seq``: the NNX module over ``seq2seq.make_seq2seq``."""

from __future__ import annotations

import inspect

import jax
from flax import nnx

from recurrent_jax import _checks
from recurrent_jax.nnx._modules import _draw_key, params
from recurrent_jax.seq2seq import model as model_lib

_OPTIONS = tuple(inspect.signature(model_lib.make_seq2seq).parameters)


class Seq2Seq(nnx.Module):
    """An attention encoder–decoder.

    ``Seq2Seq(src_vocab_size, tgt_vocab_size, *, rngs, **options)`` with
    the options of ``rj.seq2seq.make_seq2seq`` (``cell``, ``hidden_size``,
    ``attention``, ``bidirectional_encoder``, ``engine``, ...). Its
    ``nnx.Param`` leaves hold ``make_seq2seq(...).init(key)``'s dict.
    Scheduled sampling draws from the module's "sampling" stream unless a
    ``key`` is given.
    """

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, rngs: nnx.Rngs, **options):
        _checks.check_unknown("Seq2Seq", options, _OPTIONS)
        self.settings = tuple(
            sorted(
                dict(options, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size).items()
            )
        )
        core = self.core().init(rngs.params())
        self.params = nnx.data(jax.tree_util.tree_map(nnx.Param, core))
        self.rngs = rngs["sampling"].fork()

    def core(self) -> model_lib.Seq2SeqModel:
        """The pure model these settings describe."""
        return model_lib.make_seq2seq(**dict(self.settings))

    def __call__(
        self,
        src,
        src_lengths,
        tgt_in,
        *,
        sampling_probability=0.0,
        key=None,
        feedback: str = "sample",
        return_alignments: bool = False,
    ):
        """Logits (B, T, V) for ``tgt_in`` (B, T) by teacher forcing, or by
        scheduled sampling with a nonzero ``sampling_probability``; with
        ``return_alignments`` also the attention weights (B, T, S)."""
        if key is None and model_lib.needs_sampling_key(sampling_probability):
            key = _draw_key(None, self.rngs)
        return model_lib.module_call(
            self.core(),
            params(self),
            src,
            src_lengths,
            tgt_in,
            sampling_probability=sampling_probability,
            key=key,
            feedback=feedback,
            return_alignments=return_alignments,
        )

    def decode(self, src, src_lengths, *, method="greedy", key=None, **options):
        """``rj.seq2seq.decode`` with these params (greedy, sample or beam)."""
        return model_lib.decode(
            self.core(), params(self), src, src_lengths, method=method, key=key, **options
        )
