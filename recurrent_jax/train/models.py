"""A model family as a value: ``make_model(model_config, task) -> Model``.

The training stages and the host loop see only the ``Model``'s stages,
never the kind of model: a new family is a module defining ``check_task``
and the ``Model`` fields (``train.stages``), its config class in
``config.MODEL_KINDS``, and one entry of ``FAMILIES``.
"""

from __future__ import annotations

from recurrent_jax.data.base import TaskSpec
from recurrent_jax.train import rnn_model, seq2seq_model, stages

# model.kind -> the family module
FAMILIES = {"rnn": rnn_model, "seq2seq": seq2seq_model}


def make_model(model_config, task: TaskSpec) -> stages.Model:
    """The ``Model`` of ``model_config`` (a ``config.MODEL_KINDS`` value) on
    ``task``; a task that the family cannot train on is a ConfigError."""
    family = FAMILIES[model_config.KIND]
    family.check_task(model_config, task)
    return stages.bind(family, model_config, task)
