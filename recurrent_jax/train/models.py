"""A model family as a value: ``make_model(model_config, task) -> Model``.

The training stages and the host loop see only the ``Model``'s stages,
never the kind of model: a new family is a module defining ``check_task``
and the ``Model`` fields (``train.stages``), its config class in
``config.MODEL_KINDS``, and one entry of ``FAMILIES``.
"""

from __future__ import annotations

import jax

from recurrent_jax.data.base import TaskSpec
from recurrent_jax.train import rnn_model, seq2seq_model, stages
from recurrent_jax.train.config import ConfigError

# model.kind -> the family module
FAMILIES = {"rnn": rnn_model, "seq2seq": seq2seq_model}


def make_model(model_config, task: TaskSpec) -> stages.Model:
    """The ``Model`` of ``model_config`` (a ``config.MODEL_KINDS`` value) on
    ``task``; a task that the family cannot train on is a ConfigError."""
    use_dtype(model_config)
    family = FAMILIES[model_config.KIND]
    family.check_task(model_config, task)
    return stages.bind(family, model_config, task)


def use_dtype(model_config) -> None:
    """Makes ``model_config.dtype`` what arrays get: a float64 model turns on
    ``jax_enable_x64`` for the process (JAX's one switch that every thread
    of a run sees), so call it before the run builds or traces anything.
    Float64 on TPUs, which have no float64 arithmetic, is a ConfigError."""
    if model_config.dtype != "float64":
        return
    if jax.default_backend() == "tpu":
        raise ConfigError(
            "config.model.dtype: expected 'float32' on TPUs (they have no float64 "
            "arithmetic), got 'float64'"
        )
    jax.config.update("jax_enable_x64", True)
