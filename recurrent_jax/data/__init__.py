"""Tasks and datasets: synthetic tasks generated on device from a key, small
real datasets that ship inside PyPI packages, your own arrays, tables and
texts (``arrays``, ``text``, ``text_classes``, ``hf``) and source/target
pairs for seq2seq models (``pairs``, vocabularies ``Seq2SeqVocab``), the benchmark
corpora (MNIST, IMDB, Penn Treebank, WikiText-2, UEA/UCR), and tasks of
your own by import path (``"my_tasks:make_task"``) or ``register_task``.

A ``Task`` builds a ``TaskSpec``; the trainer draws ``Batch``es from it on
the device (``sample_train``) or streams its host ``Rows`` through grain
(``config.data.stream``, ``recurrent_jax.data.stream``)."""

from recurrent_jax.data.base import (
    Batch,
    DataError,
    Inputs,
    MissingExtraError,
    Rows,
    Task,
    TaskSpec,
    losses_and_metrics,
    path_option,
)
from recurrent_jax.data.registry import get_task, register_task, task_names, tasks
from recurrent_jax.data.seq2seq_tasks import Seq2SeqBatch
from recurrent_jax.data.seq2seq_vocab import Seq2SeqVocab

__all__ = [
    "Batch",
    "DataError",
    "Inputs",
    "MissingExtraError",
    "Rows",
    "Seq2SeqBatch",
    "Seq2SeqVocab",
    "Task",
    "TaskSpec",
    "get_task",
    "losses_and_metrics",
    "path_option",
    "register_task",
    "task_names",
    "tasks",
]
