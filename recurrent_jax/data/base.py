"""What a task is: batches, the task spec the trainer reads, losses, metrics.

Shapes: ``B`` batch, ``T`` time steps, ``D`` input features, ``C`` classes
or regression outputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from recurrent_jax.cells.base import widen

REGRESSION = "regression"
CLASSIFICATION = "classification"
LAST = "last"  # many-to-one: one output after the whole sequence was read
SEQUENCE = "sequence"  # many-to-many, aligned: one output per input step


class DataError(ValueError):
    """A dataset is missing, empty or malformed."""


class MissingExtraError(ImportError):
    """A task needs an optional package that is not installed."""


class Batch(NamedTuple):
    """One batch of a task.

    Attributes:
      xs: float32 (B, T, D) inputs ((B, T, *spatial, D) for frames), or
        int32 (B, T) token ids in [0, ``TaskSpec.input_vocab``).
      targets: float32 (B, C) / (B, T, C) for regression; int32 class ids
        (B,) / (B, T) for classification.
      weights: float32 (B,) / (B, T) loss weights (1 where an output is
        scored), or None for all ones.
      seq_lengths: int32 (B,) valid steps of variable-length inputs, or None.
    """

    xs: jax.Array
    targets: jax.Array
    weights: jax.Array | None = None
    seq_lengths: jax.Array | None = None


class Rows(NamedTuple):
    """A task's training rows on the host, for the streamed path
    (``config.data.stream``; ``recurrent_jax.data.stream``).

    Attributes:
      count: the number of rows N.
      take: ``take(indices) -> Batch`` of NumPy arrays: the rows at
        ``indices`` (int (K,) in [0, N)), each field with a leading axis of
        K and the same trailing shape for every call (padded to the data's
        length), as ``sample_train`` would give them.
    """

    count: int
    take: Callable[[Any], Batch]


class Inputs(NamedTuple):
    """How a built task reads new inputs as its model reads them, with the
    readers, checks and statistics of its training split (a trained run's
    ``predict``). A task without one takes inputs as its model reads them.

    Attributes:
      encode: ``encode(x, seq_lengths) -> xs``, pure and jittable: raw
        inputs as the task's data files hold them (float (N, T, D)
        features, int (N, T) ids; ``seq_lengths`` int (N,)) to what the
        model reads (features standardised with the training split's mean
        and deviation, symbols one-hot); None: as they are.
      read: ``read(path) -> (x, seq_lengths)``: the inputs of a data file in
        the task's own format and columns, read by its readers
        (``recurrent_jax.data.readers``: no pickles, sizes checked first);
        None: the ``arrays`` task's readers with their default columns.
      tokenize: ``tokenize(text) -> ids`` (int32), the tokenizer of a text
        task, built on its training split; None for other tasks.
      max_length: ids kept of each text (text classification), else None.
    """

    encode: Callable[[Any, Any], jax.Array] | None = None
    read: Callable[[Any], tuple] | None = None
    tokenize: Callable[[str], Any] | None = None
    max_length: int | None = None


class TaskSpec(NamedTuple):
    """A built task, as the trainer sees it.

    Attributes:
      input_size: D.
      output_size: C, the readout's features.
      kind: "regression", "classification" or "seq2seq" (batches are then
        ``Seq2SeqBatch``, the vocabularies ``vocab``; a seq2seq model trains
        on it).
      output_mode: "last" (many-to-one) or "sequence" (many-to-many).
      causal: outputs may use only the past (a bidirectional model would
        cheat: language modelling, forecasting, copy).
      sample_train: ``sample_train(key, batch_size) -> Batch``, pure, jittable:
        the default, in-memory path (the data on the device, rows drawn by key).
      eval_set: ``eval_set(key, size) -> Batch``, the held-out data (datasets
        ignore ``size`` and return their test split).
      baselines: name -> value of trivial predictors on the eval metric.
      primary_metric: the eval metric that picks the best checkpoint.
      higher_is_better: its direction.
      bits_per_symbol: also report loss / ln 2 as ``bits_per_char``.
      perplexity: also report exp(loss) as ``perplexity`` (word models).
      info: free-form facts for the summary (sizes, split).
      decode: ``decode(ids) -> str`` for symbol tasks whose model can be
        sampled from (language modelling), else None.
      spatial_shape: the spatial axes of each step's input and output, xs
        (B, T, *spatial_shape, D) (frames: a convolutional cell's task), or
        () for feature vectors.
      input_vocab: V for token inputs, xs int32 (B, T) ids in [0, V) that a
        model embeds (``model.embedding_size``); None for feature vectors.
      train_rows: the training rows on the host (``Rows``), for tasks that
        can be streamed (``config.data.stream``), else None.
      inputs: how new inputs are read and encoded as the training data was
        (``Inputs``), or None: inputs are given as the model reads them.
      vocab: a seq2seq task's vocabularies
        (``recurrent_jax.data.seq2seq_vocab.Seq2SeqVocab``: symbols and the
        PAD, BOS, EOS ids; ``input_size`` and ``output_size`` are its
        source and target sizes), else None.
    """

    input_size: int
    output_size: int
    kind: Literal["regression", "classification", "seq2seq"]
    output_mode: str
    causal: bool
    sample_train: Callable[[jax.Array, int], Batch]
    eval_set: Callable[[jax.Array, int], Batch]
    baselines: dict
    primary_metric: str
    higher_is_better: bool
    bits_per_symbol: bool = False
    perplexity: bool = False
    info: dict | None = None
    decode: Callable[[Any], str] | None = None
    spatial_shape: tuple = ()
    input_vocab: int | None = None
    train_rows: Rows | None = None
    inputs: Inputs | None = None
    vocab: Any = None


PATH_OPTION = "recurrent_jax.path"  # the metadata key of a task option holding a path


def path_option(default: str = "", *, or_name: bool = False):
    """A task option (a field of its options dataclass) holding a local
    file or folder; ``or_name``: or a name its loader looks up elsewhere (a
    hub dataset, a URL) when no such path exists. A relative path in a
    config file is relative to that file's folder, on the command line or
    in Python to the working directory; a run records it absolute
    (``recurrent_jax.train.config.resolve_paths``)."""
    return dataclasses.field(default=default, metadata={PATH_OPTION: or_name})


def path_options(options: type) -> dict[str, bool]:
    """name -> ``or_name`` of the ``path_option`` fields of a task's
    options dataclass."""
    fields = dataclasses.fields(options) if dataclasses.is_dataclass(options) else ()
    return {f.name: f.metadata[PATH_OPTION] for f in fields if PATH_OPTION in f.metadata}


MODEL_KINDS = ("rnn", "seq2seq")  # ``Task.model_kind``: the model family that trains on it


class Task(NamedTuple):
    """A registry entry: ``build(options) -> TaskSpec``.

    ``pattern`` is free text for listings ("many-to-one"); ``model_kind``
    decides the model family a config of the task starts from (``rnn``,
    or ``seq2seq`` for a task whose ``TaskSpec.kind`` is "seq2seq")."""

    name: str
    description: str
    pattern: str  # "many-to-one", "many-to-many aligned", ...
    options: type  # frozen dataclass of task-specific config fields
    build: Callable[[Any], TaskSpec]
    extra: str | None = None  # optional packages it needs, for messages
    model_kind: Literal["rnn", "seq2seq"] = "rnn"


def losses_and_metrics(task: TaskSpec, outputs: jax.Array, batch: Batch) -> dict:
    """Weighted per-example loss and the task's metrics (all scalars).

    ``outputs``: (B, C) or (B, T, C) readout values (logits for
    classification). Returns ``{"loss", "mse"}`` or ``{"loss", "accuracy"}``
    (plus ``bits_per_char`` or ``perplexity``).
    """
    if not isinstance(task, TaskSpec):
        raise TypeError(f"task: expected a TaskSpec (Task.build's result), got {task!r}")
    if task.kind == REGRESSION:
        per_output = jnp.mean(jnp.square(outputs - batch.targets), axis=-1)
        loss = weighted_mean(per_output, batch.weights)
        return {"loss": loss, "mse": loss}
    log_probs = jax.nn.log_softmax(widen(outputs), axis=-1)  # fp32 at least
    nll = -jnp.take_along_axis(log_probs, batch.targets[..., None], axis=-1)[..., 0]
    correct = (jnp.argmax(outputs, axis=-1) == batch.targets).astype(jnp.float32)
    metrics = {
        "loss": weighted_mean(nll, batch.weights),
        "accuracy": weighted_mean(correct, batch.weights),
    }
    if task.bits_per_symbol:
        metrics["bits_per_char"] = metrics["loss"] / math.log(2.0)
    if task.perplexity:
        metrics["perplexity"] = jnp.exp(metrics["loss"])
    return metrics


def weighted_mean(values: jax.Array, weights: jax.Array | None) -> jax.Array:
    if weights is None:
        return jnp.mean(values)
    return jnp.sum(values * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def on_device(tree):
    """``tree`` of host arrays as device arrays, concrete even when first
    called inside a trace (a split uploaded the first time a run draws
    from it, so a streamed run never uploads it)."""
    with jax.ensure_compile_time_eval():
        return jax.tree_util.tree_map(jnp.asarray, tree)


def one_hot(ids: jax.Array, size: int) -> jax.Array:
    return jax.nn.one_hot(ids, size, dtype=jnp.float32)


def sample_rows(arrays: Batch, key: jax.Array, batch_size: int) -> Batch:
    """A batch of rows drawn uniformly with replacement from a fixed split."""
    num_rows = arrays.xs.shape[0]
    rows = jax.random.randint(key, (batch_size,), 0, num_rows)
    return jax.tree_util.tree_map(lambda a: a[rows], arrays)
