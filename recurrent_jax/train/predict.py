"""A trained run's predictions for new inputs, and a language model's
continuations of a prompt.

New inputs are read as the run's data was (``TaskSpec.inputs``): arrays
as its data files hold them — float (N, T, D) features, int (N, T) token
ids — are checked as a file's are (``data.files.check_arrays``) and
encoded with the training split's statistics (standardised features,
one-hot symbols); texts go through the task's tokenizer; a seq2seq run
reads source strings. Predictions are named NumPy arrays
(``Model.predict``), per-step ones cut to each row's length.
"""

from __future__ import annotations

import csv
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from recurrent_jax.data import arrays, readers, tokens
from recurrent_jax.data.base import SEQUENCE, Batch, DataError, Inputs
from recurrent_jax.data.files import check_arrays
from recurrent_jax.data.seq2seq_specs import SEQ2SEQ
from recurrent_jax.train import generate
from recurrent_jax.train.config import ConfigError

ARRAY_FILES = (".npz", ".npy", ".csv", ".parquet")  # else a text file, or a folder of .npy


def predict(run, xs, seq_lengths=None, *, batch_size: int | None = None, **options) -> dict:
    """Predictions of ``run`` (a ``LoadedRun``) for ``xs``.

    ``xs``: raw inputs as the run's data holds them (float (N, T, D)
    features or int (N, T) token ids, ``seq_lengths`` (N,) their valid
    steps, default all), or a list of texts (a text task: tokenised as its
    training texts were) or of source strings (a seq2seq run).
    ``options``: a seq2seq run's decoder (``method`` "greedy", "sample" or
    "beam", with ``beam_size``, ``length_penalty``, ``temperature``,
    ``top_k``, ``key``...). Rows go through the model ``batch_size`` at a
    time (default ``config.data.eval_size``).

    Returns named arrays with a leading axis of N: ``classes`` and
    ``probabilities`` (classification), ``values`` (regression), per step
    with ``lengths`` (classes -1 and zeros past each length); a seq2seq
    run's ``sequences``, ``lengths``, ``scores``, its ``source`` strings
    and the decoded ``text``.
    """
    if run.task.kind == SEQ2SEQ:
        return _decode(run, xs, options)
    if options:
        raise ConfigError(f"options: {sorted(options)} apply to seq2seq runs only")
    x, lengths = model_inputs(run, xs, seq_lengths)
    call = jax.jit(inference(run))
    size = batch_size or run.config.data.eval_size
    parts = [
        jax.device_get(call(run.hparams, run.params, x[i : i + size], lengths[i : i + size]))
        for i in range(0, len(x), size)
    ]
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return out | ({"lengths": lengths} if run.task.output_mode == SEQUENCE else {})


def model_inputs(run, xs, seq_lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """(x, lengths) of raw inputs or texts, checked against the run's task."""
    task, inputs = run.task, run.task.inputs or Inputs()
    if isinstance(xs, str):
        raise DataError("xs: expected a list of texts, got one string; wrap it in a list")
    if isinstance(xs, list | tuple) and xs and all(isinstance(t, str) for t in xs):
        if inputs.tokenize is None:
            raise DataError("xs: expected arrays; this run's task has no tokenizer for texts")
        limit = inputs.max_length or max(len(t) for t in xs) + 1
        ids, lengths = tokens.pad([inputs.tokenize(t) for t in xs], limit)
        xs, seq_lengths = ids, lengths
    if task.spatial_shape:  # frames: (N, T, *spatial, D) as the model reads them
        x = np.asarray(xs, np.float32)
        lengths = np.full(len(x), x.shape[1], np.int32) if seq_lengths is None else seq_lengths
        return x, np.asarray(lengths, np.int32)
    x, _, lengths = check_arrays("xs", xs, None, seq_lengths)
    vocab = task.input_vocab or (task.input_size if inputs.tokenize else None)
    if vocab is not None:
        _check_ids(x, lengths, vocab)
    elif x.ndim != 3 or x.shape[-1] != task.input_size:
        raise DataError(
            f"xs: expected float features (N, T, {task.input_size}) as the run's data, got "
            f"{x.dtype}{list(x.shape)}"
        )
    return x, lengths


def _check_ids(x: np.ndarray, lengths: np.ndarray, vocab: int) -> None:
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
        raise DataError(f"xs: expected int token ids (N, T) as the run's data, got {x.dtype}")
    valid = np.arange(x.shape[1])[None] < lengths[:, None]
    bad = valid & (x >= vocab)
    if bad.any():
        row, step = np.argwhere(bad)[0]
        raise DataError(
            f"xs: expected token ids < {vocab} (the run's vocabulary), got {int(x[row, step])} "
            f"at row {row}, step {step}"
        )


def inference(run, model=None):
    """``infer(hparams, params, x, lengths) -> predictions`` of an ``rnn``
    run (``model``: another ``Model`` of its config, default the run's):
    raw inputs encoded (``Inputs.encode``), ``Model.predict``, per-step
    predictions cut to each row's length (zeros, classes -1). Pure."""
    encode = (run.task.inputs or Inputs()).encode
    return _inference(model or run.model, encode, run.task.output_mode == SEQUENCE)


@functools.lru_cache(maxsize=16)
def _inference(model, encode, per_step: bool):
    def infer(hparams, params, x, lengths):
        xs = x if encode is None else encode(x, lengths)
        out = model.predict(hparams, params, Batch(xs, None, None, lengths))
        return _cut_to_lengths(out, lengths) if per_step else out

    return infer


def _cut_to_lengths(out: dict, lengths) -> dict:
    valid = jnp.arange(next(iter(out.values())).shape[1])[None] < lengths[:, None]
    cut = {}
    for name, a in out.items():
        where = valid.reshape(valid.shape + (1,) * (a.ndim - 2))
        cut[name] = jnp.where(where, a, -1 if name == "classes" else 0).astype(a.dtype)
    return cut


def _decode(run, sources, options: dict) -> dict:
    from recurrent_jax.train.decode import source_batch

    if not (isinstance(sources, list | tuple) and all(isinstance(s, str) for s in sources)):
        raise DataError(f"xs: expected a list of source strings, got {type(sources).__name__}")
    width = (run.task.info or {}).get("max_len")
    if width is None:
        width = jax.eval_shape(run.task.eval_set, jax.random.key(0), 1).tgt_out.shape[1]
    try:
        batch = source_batch(run.task.vocab, list(sources), options.pop("max_len", width))
    except DataError as error:
        raise DataError(f"xs: {error}") from None
    key = options.pop("key", None)
    call = jax.jit(lambda p, b, k: run.model.predict(run.hparams, p, b, key=k, **options))
    out = jax.device_get(call(run.params, batch, key))
    text = run.task.vocab.decode(out["sequences"])
    return out | {"source": np.array(sources), "text": np.array(text)}


def sample(
    run, prompt: str, length: int = 200, *, temperature=1.0, top_k=None, seed: int = 0
) -> str:
    """The prompt and ``length`` symbols sampled after it by ``run``, a
    language model (a causal task with a tokenizer and a ``decode``):
    temperature 0 takes the most likely symbol, ``top_k`` samples among the
    k most likely, ``seed`` draws."""
    task = run.task
    tokenize = (task.inputs or Inputs()).tokenize
    if task.decode is None or tokenize is None or not task.causal:
        raise ConfigError(
            f"prompt: expected a language model's run (a text task), got task "
            f"{run.config.data.task!r}"
        )
    if top_k is not None and not 1 <= int(top_k) <= task.output_size:
        raise ConfigError(f"top_k: expected None or 1..{task.output_size}, got {top_k!r}")
    ids = np.asarray(tokenize(prompt), np.int32)
    if ids.size == 0:
        raise DataError("prompt: expected at least one symbol, got an empty prompt")
    key = jax.random.key(seed)
    sampled = generate.continue_ids(
        run.config.model,
        run.params,
        ids,
        key,
        int(length),
        task.output_size,
        temperature,
        None if top_k is None else int(top_k),
        run.hparams.rates,
    )
    return prompt + task.decode(jax.device_get(sampled).tolist())


# --- files -------------------------------------------------------------------------


def read_inputs(run, paths: list[str]):
    """The inputs of files for ``predict``: one data file of arrays read as
    the run's data files are (``Inputs.read``), or text files, one text
    each (a text task)."""
    paths = [Path(p) for p in paths]
    if run.task.kind == SEQ2SEQ:  # a file of sources, read by the task (its vocabulary)
        if len(paths) != 1 or run.task.inputs is None or run.task.inputs.read is None:
            raise DataError(
                f"--input: expected one file of sources for the {run.config.data.task!r} task's "
                "reader, or --source strings"
            )
        return run.task.inputs.read(paths[0])
    array_files = [p for p in paths if p.suffix in ARRAY_FILES or p.is_dir()]
    if array_files and len(paths) > 1:
        raise DataError(f"--input: expected one file of arrays or text files, got {len(paths)}")
    if array_files:
        read = (run.task.inputs or Inputs()).read
        if read is None:  # the arrays task's readers, its default columns
            read = functools.partial(arrays.read_inputs, arrays.ArraysOptions())
        return read(paths[0])
    return [readers.read_text_file(p, "--input") for p in paths]


def write_predictions(predictions: dict, path) -> Path:
    """Writes ``predictions`` to ``path``: ``.npz`` (one array a name) or
    ``.csv`` (a row per example, or per example and step with
    ``lengths``: its valid steps)."""
    path = Path(path)
    if path.suffix == ".npz":
        with path.open("wb") as f:
            np.savez(f, **predictions)
        return path
    if path.suffix != ".csv":
        raise ConfigError(f"--output: expected a .npz or .csv file, got {str(path)!r}")
    header, rows = csv_rows(predictions)
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def csv_rows(predictions: dict) -> tuple[list[str], list[list]]:
    """The CSV table of ``predictions``: columns ``row`` (and ``step``),
    then one per value (``probabilities_0``... for vectors)."""
    lengths = predictions.get("lengths")
    per_step = lengths is not None and "sequences" not in predictions
    names = [n for n in predictions if n != "lengths" or not per_step]
    header = ["row", *(["step"] if per_step else [])]
    for name in names:
        a = predictions[name]
        wide = a.ndim > (2 if per_step else 1)
        header += [f"{name}_{j}" for j in range(a.shape[-1])] if wide else [name]
    rows = []
    for i in range(len(next(iter(predictions.values())))):
        for t in range(int(lengths[i])) if per_step else [None]:
            at = (i,) if t is None else (i, t)
            cells = [np.atleast_1d(predictions[name][at]).tolist() for name in names]
            rows.append([*at, *(v for c in cells for v in c)])
    return header, rows
