"""The encoder–decoder model as pure functions.

``B`` batch, ``S`` source and ``T`` target steps, ``E`` embedding size,
``V`` target vocabulary. The one-step function of the inference decoders is
``functools.partial(model.decode_step, params)``::

    model = rj.seq2seq.make_seq2seq(src_vocab_size=13, tgt_vocab_size=13,
                                    hidden_size=64, attention="general")
    params = model.init(key)
    out = model.apply(params, src, src_lengths, tgt_in)    # teacher forcing
    state = model.initial_decoder_state(params, src, src_lengths)
    logits, state, weights = model.decode_step(params, state, tokens)
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks, cells
from recurrent_jax.engine import Engine
from recurrent_jax.layers import Layer
from recurrent_jax.seq2seq import beam, decoding, training
from recurrent_jax.seq2seq.attention import make_attention
from recurrent_jax.seq2seq.decoder import AttentionDecoder, attention_decoder
from recurrent_jax.seq2seq.encoder import Bridge, make_bridge, make_encoder
from recurrent_jax.sequence import length_mask

# the cells the decoder steps token by token
CELLS = {name: cells.REGISTRY[name] for name in ("elman", "lstm", "gru", "mgu")}
_embed_init = jax.nn.initializers.normal(1.0)
_glorot = jax.nn.initializers.glorot_uniform()


class Encoded(NamedTuple):
    """``outputs`` (B, S, M), zero at padded steps; ``carries`` the encoder's
    final carries, one per layer (``(forward, backward)`` when bidirectional)."""

    outputs: jax.Array
    carries: tuple


class Seq2SeqModel(NamedTuple):
    """An attention encoder–decoder as pure functions.

    Attributes:
      init: ``init(key) -> params`` with ``src_embedding`` (V_src, E),
        ``encoder``, ``bridge``, ``tgt_embedding`` (V, E), ``decoder``
        (``AttentionDecoder`` params) and ``output`` {``w`` (A, V), ``b`` (V,)}.
      encode: ``encode(params, src (B, S), src_lengths (B,)) -> Encoded``.
      initial_decoder_state: ``(params, src, src_lengths) -> DecoderState``.
      decode_step: ``(params, state, tokens (B,)) -> (logits (B, V), state,
        weights (B, S))``; the weights are the step's attention.
      apply: ``(params, src, src_lengths, tgt_in (B, T), *,
        sampling_probability=0.0, key=None, feedback="sample") ->
        training.TrainingDecode`` (logits (B, T, V), alignment history
        ``aux`` (B, T, S), inputs read); teacher forcing when the probability
        is a Python 0, scheduled sampling otherwise.
      encoder, bridge, decoder: the parts.
    """

    init: Callable
    encode: Callable
    initial_decoder_state: Callable
    decode_step: Callable
    apply: Callable
    encoder: Layer
    bridge: Bridge
    decoder: AttentionDecoder


def seq2seq(
    src_vocab_size: int,
    tgt_vocab_size: int,
    *,
    encoder_layer: Layer,
    decoder: AttentionDecoder,
    bridge: Bridge,
    embedding_size: int,
    param_dtype=jnp.float32,
) -> Seq2SeqModel:
    """Assembles an encoder (an ``rj.Layer`` whose carries ``bridge``
    reads), an attention decoder, and embeddings and a readout; ``init``
    gives every param in ``param_dtype`` (drawn in fp32, then cast)."""
    v_src = _checks.check_positive_int("src_vocab_size", src_vocab_size)
    v_tgt = _checks.check_positive_int("tgt_vocab_size", tgt_vocab_size)
    emb = _checks.check_positive_int("embedding_size", embedding_size)
    memory_size = encoder_layer.output_size

    def init(key):
        keys = jax.random.split(key, 6)
        enc = encoder_layer.init(keys[0], emb)
        carries = jax.eval_shape(lambda: encoder_layer.apply(enc, jnp.zeros((1, 1, emb)))[0])
        params = {
            "src_embedding": _embed_init(keys[1], (v_src, emb), jnp.float32),
            "encoder": enc,
            "bridge": bridge.init(keys[2], carries),
            "tgt_embedding": _embed_init(keys[3], (v_tgt, emb), jnp.float32),
            "decoder": decoder.init(keys[4], emb, memory_size),
            "output": {
                "w": _glorot(keys[5], (decoder.output_size(memory_size), v_tgt), jnp.float32),
                "b": jnp.zeros((v_tgt,), jnp.float32),
            },
        }
        return jax.tree_util.tree_map(lambda p: p.astype(param_dtype), params)

    def encode(params, src, src_lengths):
        _check_ids("src", src, v_src, ndim=2)
        src_lengths = _check_lengths(src_lengths, src)
        xs = jnp.take(params["src_embedding"], src, axis=0)
        carries, outputs = encoder_layer.apply(params["encoder"], xs, seq_lengths=src_lengths)
        return Encoded(outputs, carries)

    def initial_decoder_state(params, src, src_lengths):
        encoded = encode(params, src, src_lengths)
        mask = length_mask(jnp.asarray(src_lengths), src.shape[1])
        carries = bridge.apply(params["bridge"], encoded.carries)
        return decoder.initial_state(params["decoder"], encoded.outputs, mask, carries)

    def decode_step(params, state, tokens):
        _check_ids("tokens", tokens, v_tgt, ndim=1)
        x = jnp.take(params["tgt_embedding"], tokens, axis=0)
        state, (y, weights) = decoder.step(params["decoder"], state, x)
        logits = y @ params["output"]["w"] + params["output"]["b"][None, :]
        return logits, state, weights

    def apply(
        params, src, src_lengths, tgt_in, *, sampling_probability=0.0, key=None, feedback="sample"
    ):
        _check_ids("tgt_in", tgt_in, v_tgt, ndim=2)
        if tgt_in.shape[0] != src.shape[0]:
            raise ValueError(
                f"tgt_in: expected batch size {src.shape[0]} (the batch of src), "
                f"got {_checks.describe(tgt_in)}"
            )
        forcing = isinstance(sampling_probability, (int, float)) and sampling_probability == 0
        if not forcing:
            training.check_sampling_arguments(sampling_probability, key, feedback)
        state = initial_decoder_state(params, src, src_lengths)
        step_fn = functools.partial(decode_step, params)
        if forcing:
            return training.teacher_forcing(step_fn, state, tgt_in)
        return training.scheduled_sampling(
            step_fn,
            state,
            tgt_in,
            sampling_probability=sampling_probability,
            key=key,
            feedback=feedback,
        )

    return Seq2SeqModel(
        init, encode, initial_decoder_state, decode_step, apply, encoder_layer, bridge, decoder
    )


def make_seq2seq(
    *,
    src_vocab_size: int,
    tgt_vocab_size: int,
    cell: str = "lstm",
    hidden_size: int = 64,
    encoder_hidden_size: int | None = None,
    num_layers: int = 1,
    decoder_layers: int | None = None,
    bidirectional_encoder: bool = False,
    attention: str | None = "general",
    attention_size: int | None = None,
    attention_normalize: bool = False,
    attention_scale: bool = False,
    attention_layer_size: int | None = None,
    input_feeding: bool = True,
    output_attention: bool = True,
    embedding_size: int = 32,
    bridge: str = "copy",
    engine: Engine | None = None,
    cell_options: dict | None = None,
    param_dtype=jnp.float32,
) -> Seq2SeqModel:
    """A ``Seq2SeqModel`` from config-friendly values.

    ``cell`` names an ``rj.cells`` family ("elman", "lstm", "gru", "mgu");
    the decoder has ``decoder_layers`` (default ``num_layers``) cells of
    ``hidden_size``, the encoder ``num_layers`` of ``encoder_hidden_size``
    (default ``hidden_size``) per direction. ``attention`` is a kind of
    ``make_attention`` or None; ``attention_size`` (default
    ``hidden_size``) its units. ``attention_layer_size`` None reads the
    logits from the context alone (TF Addons' default); a size adds Luong's
    attention layer over [h_t; c_t], which the logits need whenever steps
    that attend alike must emit different tokens (see ``attention_decoder``).
    ``bridge`` "copy", "linear" or "zeros" (see ``make_bridge``).
    ``engine`` (an ``rj.Engine``) runs the encoder; the decoder steps one
    token at a time through its attention, which no backend replaces.
    ``cell_options`` go to every encoder and decoder cell's constructor
    (e.g. ``{"forget_bias": 2.0}`` for LSTMs). ``param_dtype``: of every
    param; the computation follows it (float64 params give float64
    carries, attention and logits, with ``jax_enable_x64`` on).
    """
    make_cell = CELLS[_checks.check_choice("cell", cell, CELLS)]
    param_dtype = _checks.check_dtype("param_dtype", param_dtype)
    if "param_dtype" in (cell_options or {}):
        raise ValueError(
            "cell_options: param_dtype is make_seq2seq's own argument (of every param); "
            f"got it in cell_options {cell_options}"
        )
    options = dict(cell_options or {}, param_dtype=param_dtype)
    for name, flag in dict(
        bidirectional_encoder=bidirectional_encoder,
        attention_normalize=attention_normalize,
        attention_scale=attention_scale,
        input_feeding=input_feeding,
        output_attention=output_attention,
    ).items():
        _checks.check_bool(name, flag)
    for name, size in dict(
        encoder_hidden_size=encoder_hidden_size,
        attention_size=attention_size,
        attention_layer_size=attention_layer_size,
    ).items():
        if size is not None:
            _checks.check_positive_int(name, size)
    num_decoder = _layers("decoder_layers", decoder_layers, num_layers)
    dec_cells = [make_cell(hidden_size, **options) for _ in range(num_decoder)]
    enc_cell = make_cell(encoder_hidden_size or hidden_size, **options)
    enc = make_encoder(
        enc_cell, num_layers=num_layers, bidirectional=bidirectional_encoder, engine=engine
    )
    mechanism = None
    if attention is not None:
        mechanism = make_attention(
            attention,
            attention_size or hidden_size,
            normalize=attention_normalize,
            scale=attention_scale,
        )
    dec = attention_decoder(
        dec_cells,
        mechanism,
        attention_layer_size=attention_layer_size,
        input_feeding=input_feeding,
        output_attention=output_attention,
    )
    return seq2seq(
        src_vocab_size,
        tgt_vocab_size,
        encoder_layer=enc,
        decoder=dec,
        bridge=make_bridge(bridge, dec_cells, bidirectional_encoder=bidirectional_encoder),
        embedding_size=embedding_size,
        param_dtype=param_dtype,
    )


def _layers(name, value, default):
    return _checks.check_positive_int(name, default if value is None else value)


def _check_ids(name, ids, vocab_size, *, ndim):
    layout = "(B, T)" if ndim == 2 else "(B,)"
    got = _checks.describe(ids)
    if not hasattr(ids, "shape") or ids.ndim != ndim:
        raise ValueError(f"{name}: expected token ids of shape {layout}, got {got}")
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name}: expected integer token ids {layout}, got {got}")
    if _checks.is_concrete(ids) and ids.size:
        values = np.asarray(ids)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(
                f"{name}: expected ids in [0, {vocab_size}) (the vocabulary size), "
                f"got values in [{lo}, {hi}]"
            )


def _check_lengths(src_lengths, src):
    return _checks.check_seq_lengths(
        src_lengths, src.shape[:1], src.shape[1], name="src_lengths", of="src", steps="S"
    )


DECODE_METHODS = ("greedy", "sample", "beam")


def module_call(
    model: Seq2SeqModel,
    params,
    src,
    src_lengths,
    tgt_in,
    *,
    sampling_probability=0.0,
    key=None,
    feedback: str = "sample",
    return_alignments: bool = False,
):
    """What the Seq2Seq modules return: logits (B, T, V) for ``tgt_in`` by
    teacher forcing (or scheduled sampling with a nonzero
    ``sampling_probability``), with the attention weights (B, T, S) when
    ``return_alignments``."""
    out = model.apply(
        params,
        src,
        src_lengths,
        tgt_in,
        sampling_probability=sampling_probability,
        key=key,
        feedback=feedback,
    )
    return (out.logits, out.aux) if return_alignments else out.logits


def needs_sampling_key(sampling_probability) -> bool:
    """Scheduled sampling draws unless the probability is a Python zero."""
    p = sampling_probability
    return not (isinstance(p, int | float) and p == 0)


def decode(
    model: Seq2SeqModel,
    params,
    src,
    src_lengths,
    *,
    method: str = "greedy",
    bos_id: int,
    eos_id: int,
    max_len: int,
    key=None,
    **options,
):
    """Decodes ``src`` with ``seq2seq.decoding``: "greedy"
    (``greedy_decode``), "sample" (``sample_decode``, needs ``key``;
    options ``temperature``, ``top_k``) or "beam" (``beam.beam_search``; options
    ``beam_size``, ``length_penalty``, ``coverage_penalty``, ...; the
    coverage penalty reads the source mask of the decoder state).
    ``options`` also take ``pad_id``. Returns their ``Decoded`` /
    ``BeamDecoded``; ``aux`` holds the attention weights (…, L, S).
    """
    _checks.check_choice("method", method, DECODE_METHODS)
    state = model.initial_decoder_state(params, src, src_lengths)
    step_fn = functools.partial(model.decode_step, params)
    ids = dict(bos_id=bos_id, eos_id=eos_id, max_len=max_len)
    if method == "greedy":
        return decoding.greedy_decode(step_fn, state, **ids, **options)
    if method == "sample":
        if key is None:
            raise ValueError("key: method='sample' needs a PRNG key, got None")
        return decoding.sample_decode(step_fn, state, key, **ids, **options)
    options.setdefault("source_mask", state.memory.mask)
    return beam.beam_search(step_fn, state, **ids, **options)
