"""The seq2seq model family (``model.kind="seq2seq"``): the attention
encoder–decoder of ``recurrent_jax.seq2seq`` on a seq2seq task (its
vocabularies and PAD/BOS/EOS ids are the task's ``TaskSpec.vocab``), as
the ``Model`` stages of ``train.stages`` (each function here takes
``(model, task, ...)`` and then the stage's own arguments).

The network is ``seq2seq.make_seq2seq`` called with the config's fields of
the same names (``Seq2SeqModelConfig.network_options``). Scheduled sampling
is compiled in only when the config's ``sampling_prob`` is non-zero; its
probability is then the traced ``hparams.sampling_prob`` times the
schedule of the step, so a sweep can vmap it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from recurrent_jax import seq2seq as s2s
from recurrent_jax.data.base import TaskSpec
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.data.seq2seq_tasks import Seq2SeqBatch
from recurrent_jax.train import seq2seq_outputs
from recurrent_jax.train.config import ConfigError
from recurrent_jax.train.config import Seq2SeqModelConfig as ModelConfig


def check_task(model: ModelConfig, task: TaskSpec) -> None:
    if task.kind != SEQ2SEQ:
        raise ConfigError(
            f"config.model.kind: expected 'rnn' for a {task.kind} task, got {model.KIND!r}"
        )
    if task.vocab is None:
        raise ConfigError(
            "config.data.task: expected a seq2seq task with its vocabularies (TaskSpec.vocab), "
            "got None"
        )


def network(model: ModelConfig, task: TaskSpec, forget_bias=None) -> s2s.Seq2SeqModel:
    """The ``Seq2SeqModel`` of a config over the task's source and target
    vocabularies; ``forget_bias`` (traced at init) reaches every LSTM."""
    options = model.network_options()
    cell_options = dict(options.pop("cell_options"))  # the cells' own, then the traced bias
    if forget_bias is not None:
        cell_options["forget_bias"] = forget_bias
    return s2s.make_seq2seq(
        src_vocab_size=task.vocab.source_size,
        tgt_vocab_size=task.vocab.target_size,
        cell_options=cell_options or None,
        param_dtype=jnp.dtype(model.dtype),
        **options,
    )


def init(model: ModelConfig, task: TaskSpec, hparams, key: jax.Array) -> dict:
    """The encoder–decoder's params; LSTMs' forget-gate biases start at
    ``hparams.forget_bias``."""
    forget_bias = hparams.forget_bias if model.cell == "lstm" else None
    return network(model, task, forget_bias).init(key)


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


def loss(model: ModelConfig, task: TaskSpec, hparams, params, batch: Seq2SeqBatch, key, step):
    """(loss, metrics) of one training batch; scheduled sampling when the
    config enables it, teacher forcing otherwise."""
    net = network(model, task)
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


def decode(model: ModelConfig, task, params, batch: Seq2SeqBatch, method="greedy", **options):
    """``seq2seq.decode`` of ``batch.src`` with the task's ids; ``max_len``
    is the width of ``batch.tgt_out``."""
    vocab = task.vocab
    return s2s.decode(
        network(model, task),
        params,
        batch.src,
        batch.src_lengths,
        method=method,
        bos_id=vocab.bos_id,
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
        max_len=batch.tgt_out.shape[1],
        **options,
    )


def exact_match(sequences, batch: Seq2SeqBatch):
    """Fraction of decoded sequences equal to the target (through its EOS)."""
    return s2s.sequence_accuracy(sequences, batch.tgt_out, lengths=batch.tgt_lengths)


def evaluate(model: ModelConfig, task: TaskSpec, hparams, params, batch: Seq2SeqBatch):
    """Held-out metrics and the greedy decode (``Decoded``, its ``aux`` the
    attention (B, L, S)): teacher-forced ``loss``, ``token_accuracy``,
    ``sequence_accuracy``; ``exact_match`` of greedy decoding; and
    ``beam_exact_match`` with a ``model.beam_size``."""
    out = network(model, task).apply(params, batch.src, batch.src_lengths, batch.tgt_in)
    metrics = forced_metrics(model, out.logits, batch)
    greedy = decode(model, task, params, batch)
    metrics["exact_match"] = exact_match(greedy.sequences, batch)
    if model.beam_size:
        beam = decode(
            model,
            task,
            params,
            batch,
            "beam",
            beam_size=model.beam_size,
            length_penalty=model.length_penalty,
        )
        metrics["beam_exact_match"] = exact_match(beam.sequences, batch)
    return metrics, greedy


def predict(
    model: ModelConfig,
    task: TaskSpec,
    hparams,
    params,
    batch: Seq2SeqBatch,
    method="greedy",
    **options,
) -> dict:
    """The decoded ``sequences`` (B, L) of ``batch.src`` (``decode``'s
    ``method`` and ``options``; ``L`` the width of ``batch.tgt_out``),
    their ``lengths`` (B,) with the EOS and ``scores`` log P(Y|X)."""
    decoded = decode(model, task, params, batch, method, **options)
    return {"sequences": decoded.sequences, "lengths": decoded.lengths, "scores": decoded.scores}


def write_eval(model, task, workdir, step, batch, outputs) -> None:
    """The samples file and attention map of each evaluation."""
    seq2seq_outputs.write_eval_outputs(task.vocab, workdir, step, batch, outputs)


def write_final(model, task, end) -> tuple[list[str], str | None]:
    """The latest evaluation's attention map and samples file."""
    return seq2seq_outputs.write_final(end.workdir)
