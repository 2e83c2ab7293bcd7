"""``Seq2Seq``: the flax.linen module over ``make_seq2seq``.

Its params are exactly ``make_seq2seq(...).init(key)``'s dict, so pure and
module code share checkpoints::

    model = rj.nn.Seq2Seq(src_vocab_size=13, tgt_vocab_size=13, hidden_size=64)
    params = model.init(key, src, src_lengths, tgt_in)["params"]
    logits = model.apply({"params": params}, src, src_lengths, tgt_in)
    greedy = model.apply({"params": params}, src, src_lengths, method="decode",
                         bos_id=1, eos_id=2, max_len=20)
    bound = model.bind({"params": params})   # ``apply``'s ``method`` is taken
    beams = bound.decode(src, src_lengths, method="beam", beam_size=4,
                         length_penalty=0.6, bos_id=1, eos_id=2, max_len=20)
    step_fn, state = bound.step_fn(), bound.initial_decoder_state(src, src_lengths)

Scheduled sampling draws from the "sampling" RNG stream when no ``key`` is
given (``rngs={"sampling": key}``).
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from recurrent_jax.engine import Engine
from recurrent_jax.seq2seq import model as model_lib

_FIELDS = tuple(inspect.signature(model_lib.make_seq2seq).parameters)


class Seq2Seq(nn.Module):
    """An attention encoder–decoder; the attributes are ``make_seq2seq``'s
    arguments (see there)."""

    src_vocab_size: int
    tgt_vocab_size: int
    cell: str = "lstm"
    hidden_size: int = 64
    encoder_hidden_size: int | None = None
    num_layers: int = 1
    decoder_layers: int | None = None
    bidirectional_encoder: bool = False
    attention: str | None = "general"
    attention_size: int | None = None
    attention_normalize: bool = False
    attention_scale: bool = False
    attention_layer_size: int | None = None
    input_feeding: bool = True
    output_attention: bool = True
    embedding_size: int = 32
    bridge: str = "copy"
    engine: Engine | None = None
    cell_options: dict | None = None
    param_dtype: Any = jnp.float32

    def core(self) -> model_lib.Seq2SeqModel:
        """The pure model these attributes describe."""
        return model_lib.make_seq2seq(**{name: getattr(self, name) for name in _FIELDS})

    def setup(self):
        self.model = self.core()
        names = jax.eval_shape(self.model.init, jax.random.PRNGKey(0)).keys()
        self.core_params = {
            name: self.param(name, lambda rng, name=name: self.model.init(rng)[name])
            for name in names
        }

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
            key = self.make_rng("sampling") if self.has_rng("sampling") else None
        return model_lib.module_call(
            self.model,
            self._params(),
            src,
            src_lengths,
            tgt_in,
            sampling_probability=sampling_probability,
            key=key,
            feedback=feedback,
            return_alignments=return_alignments,
        )

    def _params(self):
        return dict(self.core_params)

    def encode(self, src, src_lengths) -> model_lib.Encoded:
        return self.model.encode(self._params(), src, src_lengths)

    def initial_decoder_state(self, src, src_lengths):
        return self.model.initial_decoder_state(self._params(), src, src_lengths)

    def decode_step(self, state, tokens):
        """``(logits (B, V), state, weights (B, S))``: the step function of
        ``seq2seq.decoding``."""
        return self.model.decode_step(self._params(), state, tokens)

    def step_fn(self):
        """``step_fn(state, tokens)`` with these params bound (pure)."""
        return functools.partial(self.model.decode_step, self._params())

    def decode(self, src, src_lengths, *, method="greedy", key=None, **options):
        """``model.decode`` with these params (greedy, sample or beam)."""
        return model_lib.decode(
            self.model, self._params(), src, src_lengths, method=method, key=key, **options
        )
