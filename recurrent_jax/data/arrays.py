"""``data.task = "arrays"``: a researcher's own arrays, no code.

``data.path`` is a ``.npz`` file (keys ``x``, ``y``, optional ``lengths``),
a folder of ``x.npy`` and ``y.npy`` (and ``lengths.npy``), or a long
CSV/Parquet table (``data.id_column``, ``time_column``, ``feature_columns``
and ``target_column``). What the task is follows from ``y``: int class ids
make a classification, floats a regression; ``y`` with a time axis is a
target at every step, without one a target per sequence (read after the
last valid step, or pooled: ``model.pooling``). Int ``x`` are token ids
that the model embeds (``model.embedding_size``).

Class ids are 0..C-1, every class present, unless ``data.num_classes``
states C (some classes absent from a small file on purpose). Values past
each row's length are padding, never read. The arrays a file declares may
take at most ``data.max_gib`` GiB (checked from the headers before
anything is read). The held-out split is ``data.eval_path``, else
``data.valid_fraction`` of the rows drawn with ``data.split_seed``. Float features are standardised
with the training split's statistics (``data.normalize``). The data lives
on the device and training batches are rows drawn by key, or, with
``data.stream``, the training rows stay on the host and are streamed
(``recurrent_jax.data.stream``).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np

from recurrent_jax import _checks
from recurrent_jax.data import readers, values
from recurrent_jax.data.base import (
    CLASSIFICATION,
    LAST,
    REGRESSION,
    SEQUENCE,
    Batch,
    DataError,
    Inputs,
    Rows,
    Task,
    TaskSpec,
    on_device,
    path_option,
    sample_rows,
)
from recurrent_jax.data.files import (
    Arrays,
    TableColumns,
    check_arrays,
    read_arrays,
    scored_class_ids,
)


@dataclasses.dataclass(frozen=True)
class ArraysOptions:
    """The ``data`` keys of the arrays task (see the module docstring)."""

    path: str = path_option()
    eval_path: str = path_option()  # empty: hold out valid_fraction of path's rows
    valid_fraction: float = 0.2
    split_seed: int = 0
    normalize: bool = True
    vocab_size: int | None = None  # token ids: None takes the largest id + 1
    num_classes: int | None = None  # class ids: None takes 0..largest, each present
    max_gib: float = readers.MAX_GIB  # the most memory a file's arrays may declare
    id_column: str = "id"
    time_column: str = "time"
    feature_columns: tuple = ()  # () : every column but id, time and target
    target_column: str = "target"
    target_per_step: bool = False

    def __post_init__(self):
        if not 0.0 < self.valid_fraction < 1.0:
            _checks.fail("valid_fraction", "a fraction in (0, 1)", self.valid_fraction)
        _checks.check_non_negative("split_seed", self.split_seed)
        for name in ("vocab_size", "num_classes"):
            if getattr(self, name) is not None:
                _checks.check_positive_int(name, getattr(self, name))
        _checks.check_positive("max_gib", self.max_gib)
        if not all(isinstance(c, str) for c in self.feature_columns):
            _checks.fail("feature_columns", "a tuple of column names", self.feature_columns)

    def columns(self) -> TableColumns:
        return TableColumns(
            self.id_column,
            self.time_column,
            tuple(self.feature_columns),
            self.target_column,
            self.target_per_step,
        )


@functools.cache
def load_splits(options: ArraysOptions) -> tuple[Arrays, Arrays, Standardise | None]:
    """(train, held-out, statistics) of the files: see ``prepare_splits``."""
    data = read_arrays(options.path, options.columns(), max_gib=options.max_gib)
    held_out = None
    if options.eval_path:
        columns, key = options.columns(), "data.eval_path"
        held_out = read_arrays(options.eval_path, columns, key=key, max_gib=options.max_gib)
    return prepare_splits(options, data, held_out, (options.path, options.eval_path))


class Standardise(NamedTuple):
    """The training split's per-feature ``mean`` and ``std`` (float32 (D,)):
    features are read as (x − mean) / std, 0 past each row's length."""

    mean: np.ndarray
    std: np.ndarray

    def encode(self, x, seq_lengths):
        """``Inputs.encode``: raw features (N, T, D) standardised (jittable)."""
        valid = jnp.arange(x.shape[1])[None, :, None] < seq_lengths[:, None, None]
        mean, std = self.mean[None, None], self.std[None, None]  # (1, 1, D)
        return jnp.where(valid, (x - mean) / std, 0.0)


def prepare_splits(
    options: ArraysOptions, data: Arrays, held_out: Arrays | None, sources: tuple = ("", "")
) -> tuple[Arrays, Arrays, Standardise | None]:
    """(train, held-out, statistics): ``data`` split (unless ``held_out``
    is given), checked and, for float features with ``options.normalize``,
    standardised in place with the training split's ``Standardise``
    (``sources`` name the training and held-out data in errors)."""
    if held_out is not None:
        train = data
        _check_alike(sources, train, held_out)
    else:
        train, held_out = _split(options, data)
    _check_vocab(options, sources, train, held_out)
    if not (options.normalize and np.issubdtype(train.x.dtype, np.floating)):
        return train, held_out, None
    statistics = Standardise(*_statistics(train))
    for a in (train, held_out):  # in place: the splits are copies of the rows read
        x = a.x
        x -= statistics.mean
        x /= statistics.std
        x[~_valid(a)] = 0.0
    return train, held_out, statistics


def _valid(a: Arrays) -> np.ndarray:
    return np.arange(a.x.shape[1])[None] < a.lengths[:, None]


def _split(options: ArraysOptions, data: Arrays) -> tuple[Arrays, Arrays]:
    return split_rows(data, options.valid_fraction, options.split_seed)


def split_rows(data, fraction: float, seed: int):
    """(train, held-out) of the rows of ``data`` (arrays with a leading row
    axis): ``fraction`` of them held out, drawn with ``seed``."""
    num = len(data[0])
    held = int(round(num * fraction))
    if num < 2 or not 0 < held < num:
        raise DataError(
            f"config.data.valid_fraction: holding out {fraction} of {num} rows leaves "
            "none on one side; give more rows or a held-out split"
        )
    order = np.random.default_rng(seed).permutation(num)

    def take(rows):
        parts = [a[rows] for a in data]
        return data._make(parts) if hasattr(data, "_make") else tuple(parts)

    return take(np.sort(order[held:])), take(np.sort(order[:held]))


def _check_alike(sources: tuple, train: Arrays, held_out: Arrays) -> None:
    for name, a, b in (("x", train.x, held_out.x), ("y", train.y, held_out.y)):
        same_kind = a.dtype == b.dtype and a.ndim == b.ndim
        if not same_kind or a.shape[2:] != b.shape[2:]:
            raise DataError(
                f"{sources[1]}: {name}: expected the kind and trailing shape of "
                f"{sources[0]}'s {a.dtype}{list(a.shape)}, got {b.dtype}{list(b.shape)}"
            )


def _check_vocab(options: ArraysOptions, sources: tuple, train: Arrays, held_out: Arrays) -> None:
    if not np.issubdtype(train.x.dtype, np.integer) or options.vocab_size is None:
        return
    for file, arrays in ((sources[0], train), (sources[1] or sources[0], held_out)):
        if arrays.x.size and arrays.x.max() >= options.vocab_size:
            raise DataError(
                f"{file}: x: expected token ids < data.vocab_size={options.vocab_size}, "
                f"got {int(arrays.x.max())}"
            )


def _statistics(train: Arrays) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std over the valid steps of the training split
    (summed in float64: squares of large float32 values overflow)."""
    steps = train.x[_valid(train)].astype(np.float64)
    std = steps.std(0) if len(steps) else np.ones(train.x.shape[-1])
    mean = steps.mean(0) if len(steps) else 0.0
    return np.asarray(mean, np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


# --- the task ----------------------------------------------------------------------


def build_arrays(options: ArraysOptions) -> TaskSpec:
    source = " and ".join(p for p in (options.path, options.eval_path) if p)
    return arrays_spec(options, *load_splits(options), source=source)


def arrays_spec(
    options: ArraysOptions,
    train: Arrays,
    held_out: Arrays,
    statistics: Standardise | None,
    *,
    source: str,
) -> TaskSpec:
    """The task of prepared splits (``prepare_splits``); its ``Inputs``
    read new files with the options' columns and standardise features
    with ``statistics``."""
    tokens = np.issubdtype(train.x.dtype, np.integer)
    vocab = _vocab_size(options, train, held_out) if tokens else None
    inputs = Inputs(
        encode=None if statistics is None else statistics.encode,
        read=functools.partial(read_inputs, options),
    )
    return splits_spec(
        train, held_out, vocab, source=source, num_classes=options.num_classes, inputs=inputs
    )


def read_inputs(options: ArraysOptions, path) -> tuple[np.ndarray, np.ndarray]:
    """(x, lengths) of the file ``path`` as the task's files are read (its
    columns and ``max_gib``), without targets."""
    found = read_arrays(
        path, options.columns(), key="--input", max_gib=options.max_gib, targets=False
    )
    return found.x, found.lengths


def arrays_task(options: ArraysOptions, x, y, lengths=None, eval=None) -> TaskSpec:
    """The arrays task of arrays in memory, as ``build_arrays`` makes it of
    files: ``x``, ``y`` and ``lengths`` as a file holds them; ``eval``
    ``(x, y)`` or ``(x, y, lengths)`` of the held-out split, else
    ``options.valid_fraction`` of the rows is held out."""
    data = check_arrays("arrays", x, y, lengths)
    held_out = None if eval is None else check_arrays("eval arrays", *_eval_arrays(eval))
    sources = ("arrays", "eval arrays" if eval is not None else "")
    splits = prepare_splits(options, data, held_out, sources)
    return arrays_spec(options, *splits, source="arrays in memory")


def _eval_arrays(eval) -> tuple:
    if not isinstance(eval, tuple | list) or len(eval) not in (2, 3):
        raise DataError(f"eval: expected (x, y) or (x, y, lengths), got {type(eval).__name__}")
    return (*eval, None) if len(eval) == 2 else tuple(eval)


def splits_spec(
    train: Arrays,
    held_out: Arrays,
    vocab: int | None = None,
    *,
    source: str = "data",
    num_classes: int | None = None,
    **extra,
) -> TaskSpec:
    """The task of checked training and held-out arrays (``vocab``: the
    token vocabulary of int ``x``; ``num_classes``: C of int ``y``, else
    0..the largest id, each present; ``source`` names the data in errors);
    ``extra`` fields of the ``TaskSpec`` (``info``, ``decode``) are added.

    The training split stays on the host until a run draws from it on the
    device (``sample_train``: uploaded once, when first traced); a streamed
    run reads its ``train_rows`` instead and never uploads it whole."""
    classes = np.issubdtype(train.y.dtype, np.integer)
    per_step = train.y.ndim == (2 if classes else 3)
    tokens = vocab is not None
    if classes:
        ids = np.concatenate([scored_class_ids(train), scored_class_ids(held_out)])
        output_size = values.count_classes(f"{source}: y", ids, num_classes)
    else:
        output_size = train.y.shape[-1]
    take = functools.partial(host_rows, train, per_step)
    device_train = functools.cache(lambda: on_device(take(slice(None))))
    device_eval = on_device(host_rows(held_out, per_step, slice(None)))
    return TaskSpec(
        input_size=vocab if tokens else train.x.shape[-1],
        output_size=output_size,
        kind=CLASSIFICATION if classes else REGRESSION,
        output_mode=SEQUENCE if per_step else LAST,
        causal=False,
        sample_train=lambda key, n: sample_rows(device_train(), key, n),
        eval_set=lambda key, n: device_eval,
        baselines=_baselines(train, held_out, classes, per_step),
        primary_metric="accuracy" if classes else "mse",
        higher_is_better=classes,
        input_vocab=vocab,
        train_rows=Rows(len(train.x), take),
        **{"info": {"train_rows": len(train.x), "eval_rows": len(held_out.x)}} | extra,
    )


def _vocab_size(options: ArraysOptions, train: Arrays, held_out: Arrays) -> int:
    if options.vocab_size is not None:
        return options.vocab_size
    return int(max(train.x.max(initial=0), held_out.x.max(initial=0))) + 1


def host_rows(arrays: Arrays, per_step: bool, rows) -> Batch:
    """The ``rows`` (indices or a slice) of a split as a NumPy ``Batch``:
    per-step targets weighted by the valid steps."""
    x, y, lengths = arrays.x[rows], arrays.y[rows], arrays.lengths[rows]
    valid = np.arange(x.shape[1])[None] < lengths[:, None]
    weights = valid.astype(np.float32) if per_step else None
    return Batch(x, y, weights, lengths)


def _baselines(train: Arrays, held_out: Arrays, classes: bool, per_step: bool) -> dict:
    """Trivial predictors on the held-out split: the training split's most
    frequent class, or its mean target."""
    if per_step:
        steps = np.arange(held_out.y.shape[1])[None] < held_out.lengths[:, None]
        train_steps = np.arange(train.y.shape[1])[None] < train.lengths[:, None]
        wanted, seen = held_out.y[steps], train.y[train_steps]
    else:
        wanted, seen = held_out.y, train.y
    if classes:
        majority = np.bincount(seen.reshape(-1)).argmax() if seen.size else 0
        return {"accuracy (majority class)": float(np.mean(wanted == majority))}
    mean = seen.reshape(-1, seen.shape[-1]).mean(0)
    return {"mse (predict the training mean)": float(np.mean(np.square(wanted - mean)))}


TASKS = [
    Task(
        "arrays",
        "your own arrays: x (N, T, D) floats or (N, T) token ids, y classes or targets "
        "(per sequence or per step), from a .npz, .npy files or a CSV/Parquet table",
        "many-to-one or many-to-many aligned (from y)",
        ArraysOptions,
        build_arrays,
    )
]


def save_arrays(path, x, y, lengths=None) -> Path:
    """Writes ``x``, ``y`` (and ``lengths``) as the ``.npz`` file the
    arrays task reads."""
    path = Path(path)
    arrays = {"x": np.asarray(x), "y": np.asarray(y)}
    if lengths is not None:
        arrays["lengths"] = np.asarray(lengths)
    np.savez(path, **arrays)
    return path
