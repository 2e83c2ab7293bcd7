"""The seq2seq model family (``model.kind="seq2seq"``): the attention
encoder–decoder of ``recurrent_jax.seq2seq`` on the character seq2seq tasks.

The stages of a ``Model`` (``train.models``): params from a key (the LSTM
forget bias through the cell constructors), a loss of (hparams, params,
batch, key, step), metrics and the greedy decode of a held-out batch.
Scheduled sampling is compiled in only when
the config's ``sampling_prob`` is non-zero; its probability is then the
traced ``hparams.sampling_prob`` times the schedule of the step, so a sweep
can vmap it.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from recurrent_jax import seq2seq as s2s
from recurrent_jax.data.seq2seq_tasks import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE, Seq2SeqBatch
from recurrent_jax.train.config import Seq2SeqModelConfig as ModelConfig


@functools.cache
def make_model(model: ModelConfig) -> s2s.Seq2SeqModel:
    """The ``Seq2SeqModel`` of a config over the shared character vocabulary."""
    return _make_model(model)


def _make_model(model: ModelConfig, cell_options=None) -> s2s.Seq2SeqModel:
    return s2s.make_seq2seq(
        src_vocab_size=VOCAB_SIZE,
        tgt_vocab_size=VOCAB_SIZE,
        cell=model.cell,
        hidden_size=model.hidden_size,
        num_layers=model.num_layers,
        decoder_layers=model.decoder_layers or None,
        bidirectional_encoder=model.bidirectional,
        attention=None if model.attention == "none" else model.attention,
        attention_size=model.attention_size or None,
        attention_normalize=model.attention_normalize,
        attention_scale=model.attention_scale,
        attention_layer_size=model.attention_layer_size or None,
        input_feeding=model.input_feeding,
        embedding_size=model.embedding_size,
        bridge=model.bridge,
        engine=model.engine,
        cell_options=cell_options,
    )


def init_params(model: ModelConfig, hparams, key: jax.Array) -> dict:
    """The encoder–decoder's params; LSTMs' forget-gate biases start at
    ``hparams.forget_bias``."""
    options = {"forget_bias": hparams.forget_bias} if model.cell == "lstm" else None
    return _make_model(model, options).init(key)


def sampling_probability(model: ModelConfig, hparams, step):
    """``hparams.sampling_prob`` · (1 − ε_step) (see ``ModelConfig``)."""
    if model.sampling_schedule == "constant":
        return hparams.sampling_prob
    options = dict(k=model.schedule_k)
    if model.sampling_schedule == "linear":
        options.update(c=model.schedule_c, epsilon=model.schedule_epsilon)
    return hparams.sampling_prob * s2s.sampling_schedule(model.sampling_schedule, **options)(step)


def forced_metrics(model: ModelConfig, logits, batch: Seq2SeqBatch) -> dict:
    """Masked cross-entropy (with label smoothing) and the teacher-forced
    token and sequence accuracies."""
    lengths = batch.tgt_lengths
    loss = s2s.sequence_cross_entropy(
        logits, batch.tgt_out, lengths=lengths, label_smoothing=model.label_smoothing
    )
    return {
        "loss": loss,
        "token_accuracy": s2s.token_accuracy(logits, batch.tgt_out, lengths=lengths),
        "sequence_accuracy": s2s.sequence_accuracy(logits, batch.tgt_out, lengths=lengths),
    }


def loss_fn(model: ModelConfig, hparams, params, batch: Seq2SeqBatch, key, step):
    """(loss, metrics) of one training batch; scheduled sampling when the
    config enables it, teacher forcing otherwise."""
    net = make_model(model)
    if model.sampling_prob:
        p = sampling_probability(model, hparams, step)
        out = net.apply(
            params,
            batch.src,
            batch.src_lengths,
            batch.tgt_in,
            sampling_probability=p,
            key=key,
            feedback=model.feedback,
        )
        extra = {"sampling_prob": jnp.asarray(p, jnp.float32)}
    else:
        out, extra = net.apply(params, batch.src, batch.src_lengths, batch.tgt_in), {}
    metrics = forced_metrics(model, out.logits, batch) | extra
    return metrics["loss"], metrics


def decode(model: ModelConfig, params, batch: Seq2SeqBatch, method: str = "greedy", **options):
    """``seq2seq.decode`` of ``batch.src`` with the task's ids; ``max_len``
    is the width of ``batch.tgt_out``."""
    return s2s.decode(
        make_model(model),
        params,
        batch.src,
        batch.src_lengths,
        method=method,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_id=PAD_ID,
        max_len=batch.tgt_out.shape[1],
        **options,
    )


def exact_match(sequences, batch: Seq2SeqBatch):
    """Fraction of decoded sequences equal to the target (through its EOS)."""
    return s2s.sequence_accuracy(sequences, batch.tgt_out, lengths=batch.tgt_lengths)


def evaluate(model: ModelConfig, params, batch: Seq2SeqBatch):
    """Held-out metrics and the greedy decode (``Decoded``, its ``aux`` the
    attention (B, L, S)): teacher-forced ``loss``, ``token_accuracy``,
    ``sequence_accuracy``; ``exact_match`` of greedy decoding; and
    ``beam_exact_match`` when ``model.beam_size`` > 0."""
    out = make_model(model).apply(params, batch.src, batch.src_lengths, batch.tgt_in)
    metrics = forced_metrics(model, out.logits, batch)
    greedy = decode(model, params, batch)
    metrics["exact_match"] = exact_match(greedy.sequences, batch)
    if model.beam_size:
        beam = decode(
            model,
            params,
            batch,
            "beam",
            beam_size=model.beam_size,
            length_penalty=model.length_penalty,
        )
        metrics["beam_exact_match"] = exact_match(beam.sequences, batch)
    return metrics, greedy
