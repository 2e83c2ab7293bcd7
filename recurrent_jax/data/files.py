"""Reading a researcher's arrays from files: ``.npz``, a folder of
``.npy`` files, or a long CSV/Parquet table (``recurrent_jax.data.tables``).
Files are read as if they came from someone else
(``recurrent_jax.data.readers``: regular files only, no pickles, declared
sizes checked against ``data.max_gib`` first). Every check names the file,
the key or column, what was expected and what was given, as a one-line
``DataError``.

Arrays: ``x`` float (N, T, D) features or int (N, T) token ids; ``y`` int
(N,) classes, float (N, C) regression targets, or per step int (N, T) /
float (N, T, C); optional ``lengths`` (N,) ints in [0, T]. Values past a
row's length (its padding) are never read: they may hold anything, NaN
included, and are set to 0. Features and float targets must be finite in
float32, ids must fit int32.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from recurrent_jax.data import readers, values
from recurrent_jax.data.base import DataError
from recurrent_jax.data.tables import TABLES, TableColumns, read_table

__all__ = ["Arrays", "TableColumns", "check_arrays", "read_arrays"]

NAMES = ("x", "y", "lengths")


class Arrays(NamedTuple):
    x: np.ndarray  # float32 (N, T, D) or int32 (N, T)
    y: np.ndarray | None  # int32 (N,) / (N, T) or float32 (N, C) / (N, T, C); None: inputs only
    lengths: np.ndarray  # (N,) int32: valid steps


def read_arrays(
    path,
    columns: TableColumns,
    *,
    key: str = "data.path",
    max_gib: float = readers.MAX_GIB,
    targets: bool = True,
) -> Arrays:
    """The checked arrays of the file ``path`` (named ``config.<key>`` in
    errors, or ``key`` itself when it is a flag such as ``--input``), whose
    arrays may declare at most ``max_gib`` GiB; without ``targets``, ``y``
    is neither needed nor read (inputs to predict on)."""
    try:
        raw = read_raw(path, columns, key=key, max_gib=max_gib, targets=targets)
        return check_arrays(path, raw["x"], raw.get("y") if targets else None, raw.get("lengths"))
    except MemoryError:  # pyarrow's ArrowMemoryError too
        raise DataError(
            f"{path}: not enough memory to read its arrays (lower data.max_gib to be told "
            "before reading, or free memory)"
        ) from None


def read_raw(path, columns: TableColumns, *, key: str, max_gib: float, targets: bool) -> dict:
    """``x``, ``y`` and ``lengths`` of the file ``path`` as stored."""
    what, file = (key if key.startswith("--") else f"config.{key}"), Path(path)
    wanted = ("x", "y") if targets else ("x",)
    if not str(path):
        raise DataError(f"{what}: expected a file of arrays, got ''")
    if not readers.exists(file):
        raise DataError(f"{what}: no such file or folder {str(file)!r}")
    budget = readers.Budget(max_gib)
    if file.is_dir():
        raw = {
            name: readers.read_npy(file / f"{name}.npy", what, budget)
            for name in NAMES
            if (name in wanted or name == "lengths") and readers.exists(file / f"{name}.npy")
        }
        if any(name not in raw for name in wanted):
            names = " and ".join(f"{n}.npy" for n in wanted)
            raise DataError(f"{file}: expected {names} (and optionally lengths.npy)")
    elif file.suffix == ".npz":
        raw = readers.read_npz(file, what, (*wanted, "lengths"), budget)
        missing = [k for k in wanted if k not in raw]
        if missing:
            paired = "source" in readers.read_npz(file, what, ("source",), budget)
            pairs = "; source/target pairs train with data.task='pairs'" if paired else ""
            raise DataError(
                f"{file}: expected the keys {' and '.join(wanted)} (lengths optional), "
                f"missing {missing}{pairs}"
            )
    elif file.suffix in TABLES:
        raw = read_table(file, columns, what, max_gib, targets=targets)
    else:
        raise DataError(
            f"{what}: expected a .npz file, a folder of x.npy and y.npy, or a "
            f"{'/'.join(TABLES)} table, got {str(file)!r}"
        )
    return raw


# --- the checks --------------------------------------------------------------------


def check_arrays(file, x, y, lengths) -> Arrays:
    """``Arrays`` of the raw ``x``, ``y`` (None: inputs only) and
    ``lengths`` (None: the full time axis) of ``file``, each checked, cast
    to the dtypes a model reads and zero past each row's length."""
    x = _regular(file, "x", x)
    num, steps = _check_shape(file, x)
    if lengths is None:
        lengths = np.full(num, steps, np.int32)
    lengths = _check_lengths(file, _regular(file, "lengths", lengths), num, steps)
    valid = np.arange(steps)[None] < lengths[:, None]  # (N, T): the steps that are read
    if np.issubdtype(x.dtype, np.integer):
        x = values.as_int32_ids(f"{file}: x", x, "token ids", ("row", "step"), valid)
    else:
        x = values.as_float32(f"{file}: x", x, ("row", "step", "feature"), valid)
    if y is not None:
        y = _check_targets(file, _regular(file, "y", y), num, steps, valid)
    return Arrays(x, y, lengths)


def _regular(file, name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object:
        raise DataError(
            f"{file}: {name}: ragged (an object array, rows of different lengths); pad it to "
            "one shape and give the valid steps in lengths"
        )
    return a


def _check_shape(file, x: np.ndarray) -> tuple[int, int]:
    tokens = np.issubdtype(x.dtype, np.integer) and x.ndim == 2
    features = np.issubdtype(x.dtype, np.floating) and x.ndim == 3
    if not (tokens or features) or 0 in x.shape:
        raise DataError(
            f"{file}: x: expected float features (N, T, D) or int token ids (N, T), each "
            f"size >= 1, got {x.dtype}{list(x.shape)}"
        )
    return x.shape[:2]


def _check_targets(file, y: np.ndarray, num: int, steps: int, valid: np.ndarray) -> np.ndarray:
    if y.shape[:1] != (num,):
        raise DataError(
            f"{file}: y: expected {num} rows (the rows of x), got {y.dtype}{list(y.shape)}"
        )
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != steps):
            raise DataError(
                f"{file}: y: expected int class ids (N,) or per step (N, T={steps}), "
                f"got {y.dtype}{list(y.shape)}"
            )
        per_step = y.ndim == 2
        axes = ("row", "step") if per_step else ("row",)
        return values.as_int32_ids(f"{file}: y", y, "class ids", axes, valid if per_step else None)
    if np.issubdtype(y.dtype, np.floating):
        if y.ndim not in (2, 3) or (y.ndim == 3 and y.shape[1] != steps) or 0 in y.shape:
            raise DataError(
                f"{file}: y: expected float targets (N, C) or per step (N, T={steps}, C) "
                f"(class ids must be integers), got {y.dtype}{list(y.shape)}"
            )
        per_step = y.ndim == 3
        axes = ("row", "step", "output") if per_step else ("row", "output")
        return values.as_float32(f"{file}: y", y, axes, valid if per_step else None)
    raise DataError(f"{file}: y: expected integer classes or float targets, got {y.dtype}")


def _check_lengths(file, lengths: np.ndarray, num: int, steps: int) -> np.ndarray:
    if not np.issubdtype(lengths.dtype, np.integer) or lengths.shape != (num,):
        raise DataError(
            f"{file}: lengths: expected ints of shape ({num},), got "
            f"{lengths.dtype}{list(lengths.shape)}"
        )
    if num and (lengths.min() < 0 or lengths.max() > steps):
        raise DataError(
            f"{file}: lengths: expected values in [0, {steps}] (T of x), got values in "
            f"[{int(lengths.min())}, {int(lengths.max())}]"
        )
    return lengths.astype(np.int32)


def scored_class_ids(arrays: Arrays) -> np.ndarray:
    """The class ids of ``arrays`` that a loss reads: every row's, or the
    valid steps' of per-step targets."""
    if arrays.y.ndim == 1:
        return arrays.y
    return arrays.y[np.arange(arrays.y.shape[1])[None] < arrays.lengths[:, None]]
