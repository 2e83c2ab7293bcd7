"""A model family as a value: ``make_model(model_config, task) -> Model``.

The training core and the host loop see only the ``Model``'s stages, never
the kind of model: a new family is one more entry of ``FAMILIES`` (its
config class in ``config.MODEL_KINDS`` and a ``build`` function).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from recurrent_jax.cells import CONV_REGISTRY as CONV_CELLS
from recurrent_jax.data.base import TaskSpec
from recurrent_jax.data.options import ConfigError
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.train import rnn_model, rnn_outputs, seq2seq_model, seq2seq_outputs
from recurrent_jax.train.config import RNNModelConfig, Seq2SeqModelConfig
from recurrent_jax.train.stages import Model


def make_model(model_config, task: TaskSpec) -> Model:
    """The ``Model`` of ``model_config`` (a ``config.MODEL_KINDS`` value) on
    ``task``; a task that the family cannot train on is a ConfigError."""
    return FAMILIES[model_config.KIND](model_config, task)


def rnn(model: RNNModelConfig, task: TaskSpec) -> Model:
    """A recurrent stack and a linear readout (``rnn_model``)."""
    if task.kind == SEQ2SEQ:
        _wrong_task(model, task, Seq2SeqModelConfig.KIND)
    conv = model.cell in CONV_CELLS
    if conv != bool(task.spatial_shape):
        expected = (
            "a convolutional cell (conv_lstm, conv_gru)"
            if task.spatial_shape
            else "a cell for feature vectors"
        )
        raise ConfigError(
            f"config.model.cell: expected {expected} for a task with spatial shape "
            f"{task.spatial_shape}, got {model.cell!r}"
        )
    if task.causal and model.bidirectional:
        raise ConfigError(
            "config.model.bidirectional: expected False for a causal task "
            "(its outputs may only use the past), got True"
        )
    return Model(
        init=lambda hparams, key: rnn_model.init_params(model, task, key, hparams),
        loss=functools.partial(rnn_model.loss, model, task),
        evaluate=functools.partial(rnn_model.evaluate, model, task),
        write_eval=lambda workdir, step, batch, outputs: None,
        write_final=functools.partial(rnn_outputs.write_final, model, task),
    )


def seq2seq(model: Seq2SeqModelConfig, task: TaskSpec) -> Model:
    """An attention encoder–decoder (``seq2seq_model``); each evaluation
    writes samples and an attention map (``seq2seq_outputs``)."""
    if task.kind != SEQ2SEQ:
        _wrong_task(model, task, RNNModelConfig.KIND)
    return Model(
        init=lambda hparams, key: seq2seq_model.init_params(model, hparams, key),
        loss=functools.partial(seq2seq_model.loss_fn, model),
        evaluate=lambda hparams, params, batch: seq2seq_model.evaluate(model, params, batch),
        write_eval=seq2seq_outputs.write_eval_outputs,
        write_final=lambda end: seq2seq_outputs.write_final(end.workdir),
    )


def _wrong_task(model, task: TaskSpec, expected: str):
    raise ConfigError(
        f"config.model.kind: expected {expected!r} for a {task.kind} task, got {model.KIND!r}"
    )


# model.kind -> build(model_config, task) -> Model
FAMILIES: dict[str, Callable[..., Model]] = {"rnn": rnn, "seq2seq": seq2seq}
