"""``rj.eqx.Seq2Seq``: the Equinox module over ``seq2seq.make_seq2seq``."""

from __future__ import annotations

import inspect

import equinox as eqx

from recurrent_jax import _checks
from recurrent_jax.seq2seq import model as model_lib

_OPTIONS = tuple(inspect.signature(model_lib.make_seq2seq).parameters)


class Seq2Seq(eqx.Module):
    """An attention encoder–decoder.

    ``Seq2Seq(src_vocab_size, tgt_vocab_size, *, key, **options)`` with the
    options of ``rj.seq2seq.make_seq2seq`` (``cell``, ``hidden_size``,
    ``attention``, ``bidirectional_encoder``, ``engine``, ...). Its
    ``params`` field holds ``make_seq2seq(...).init(key)``'s dict; scheduled
    sampling draws from the ``key`` given to the call, as Equinox does.
    """

    params: dict
    settings: tuple = eqx.field(static=True)  # (name, value) pairs, hashable

    def __init__(self, src_vocab_size: int, tgt_vocab_size: int, *, key=None, **options):
        _checks.check_unknown("Seq2Seq", options, _OPTIONS)
        if key is None:
            raise ValueError("key: a PRNG key is required to initialise the params, got None")
        given = dict(options, src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size)
        if given.get("cell_options") is not None:
            given["cell_options"] = tuple(sorted(given["cell_options"].items()))
        self.settings = tuple(sorted(given.items()))
        self.params = self.core().init(_checks.check_key("key", key))

    def core(self) -> model_lib.Seq2SeqModel:
        """The pure model these settings describe."""
        settings = dict(self.settings)
        if settings.get("cell_options") is not None:
            settings["cell_options"] = dict(settings["cell_options"])
        return model_lib.make_seq2seq(**settings)

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
        scheduled sampling with a nonzero ``sampling_probability`` (then
        ``key`` draws the choices); with ``return_alignments`` also the
        attention weights (B, T, S)."""
        return model_lib.module_call(
            self.core(),
            self.params,
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
            self.core(), self.params, src, src_lengths, method=method, key=key, **options
        )
