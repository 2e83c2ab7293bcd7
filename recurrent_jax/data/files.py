"""Reading a researcher's arrays from files: ``.npz``, a folder of
``.npy`` files, or a long CSV/Parquet table (one row per series and time
step, read with pyarrow). Every check names the file, the key or column,
what was expected and what was given, as a one-line ``DataError``.

Arrays: ``x`` float (N, T, D) features or int (N, T) token ids; ``y`` int
(N,) classes, float (N, C) regression targets, or per step int (N, T) /
float (N, T, C); optional ``lengths`` (N,) ints in [0, T].
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from recurrent_jax.data.base import DataError, MissingExtraError

TABLES = (".csv", ".parquet")


class Arrays(NamedTuple):
    x: np.ndarray
    y: np.ndarray
    lengths: np.ndarray  # (N,) int32: valid steps


class TableColumns(NamedTuple):
    """How a long table's columns make arrays."""

    id: str
    time: str
    features: tuple  # () : every column but id, time and target
    target: str
    target_per_step: bool


def read_arrays(path, columns: TableColumns, *, key: str = "data.path") -> Arrays:
    """The checked arrays of the file ``path`` (named ``key`` in errors)."""
    file = Path(path)
    if not str(path):
        raise DataError(f"config.{key}: expected a file of arrays, got ''")
    if not file.exists():
        raise DataError(f"config.{key}: no such file or folder {str(file)!r}")
    if file.is_dir():
        raw = {name: _load_npy(file / f"{name}.npy") for name in ("x", "y", "lengths")}
        if raw["x"] is None or raw["y"] is None:
            raise DataError(f"{file}: expected x.npy and y.npy (and optionally lengths.npy)")
    elif file.suffix == ".npz":
        raw = _load_npz(file)
    elif file.suffix in TABLES:
        raw = read_table(file, columns)
    else:
        raise DataError(
            f"config.{key}: expected a .npz file, a folder of x.npy and y.npy, or a "
            f"{'/'.join(TABLES)} table, got {str(file)!r}"
        )
    return check_arrays(file, raw.get("x"), raw.get("y"), raw.get("lengths"))


def _load_npy(path: Path):
    if not path.exists():
        return None
    return _read(path, lambda: np.load(path, allow_pickle=True))


def _load_npz(path: Path) -> dict:
    def load():
        with np.load(path, allow_pickle=True) as f:
            return {k: f[k] for k in f.files}

    raw = _read(path, load)
    missing = [k for k in ("x", "y") if k not in raw]
    if missing:
        raise DataError(f"{path}: expected the keys x and y (lengths optional), missing {missing}")
    return raw


def _read(path: Path, load):
    try:
        return load()
    except (OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: cannot be read as NumPy arrays ({error})") from None


# --- the checks --------------------------------------------------------------------


def check_arrays(file, x, y, lengths) -> Arrays:
    """``Arrays`` of the raw ``x``, ``y`` and ``lengths`` of ``file``, each
    checked; lengths default to the full time axis."""
    x, y = _regular(file, "x", x), _regular(file, "y", y)
    tokens = np.issubdtype(x.dtype, np.integer)
    if not (tokens and x.ndim == 2) and not (np.issubdtype(x.dtype, np.floating) and x.ndim == 3):
        raise DataError(
            f"{file}: x: expected float features (N, T, D) or int token ids (N, T), "
            f"got {x.dtype}{list(x.shape)}"
        )
    num, steps = x.shape[:2]
    if y.shape[:1] != (num,):
        raise DataError(
            f"{file}: y: expected {num} rows (the rows of x), got {y.dtype}{list(y.shape)}"
        )
    _check_targets(file, y, steps)
    if lengths is None:
        lengths = np.full(num, steps, np.int32)
    lengths = _check_lengths(file, _regular(file, "lengths", lengths), num, steps)
    if not tokens and not np.isfinite(x).all():
        bad = np.argwhere(~np.isfinite(x))
        raise DataError(
            f"{file}: x: expected finite features, got {len(bad)} NaN/Inf values "
            f"(first at row {bad[0][0]}, step {bad[0][1]})"
        )
    if tokens and x.size and x.min() < 0:
        raise DataError(f"{file}: x: expected token ids >= 0, got {int(x.min())}")
    x = x.astype(np.int32 if tokens else np.float32)
    return Arrays(
        x, y.astype(np.int32 if np.issubdtype(y.dtype, np.integer) else np.float32), lengths
    )


def _regular(file, name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype == object:
        raise DataError(
            f"{file}: {name}: ragged (an object array, rows of different lengths); pad it to "
            "one shape and give the valid steps in lengths"
        )
    return a


def _check_targets(file, y: np.ndarray, steps: int) -> None:
    if np.issubdtype(y.dtype, np.integer):
        if y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != steps):
            raise DataError(
                f"{file}: y: expected int class ids (N,) or per step (N, T={steps}), "
                f"got {y.dtype}{list(y.shape)}"
            )
        if y.size and y.min() < 0:
            raise DataError(f"{file}: y: expected class ids >= 0, got {int(y.min())}")
    elif np.issubdtype(y.dtype, np.floating):
        if y.ndim not in (2, 3) or (y.ndim == 3 and y.shape[1] != steps):
            raise DataError(
                f"{file}: y: expected float targets (N, C) or per step (N, T={steps}, C) "
                f"(class ids must be integers), got {y.dtype}{list(y.shape)}"
            )
        if not np.isfinite(y).all():
            raise DataError(f"{file}: y: expected finite targets, got NaN/Inf")
    else:
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


# --- long tables -------------------------------------------------------------------


def read_table(file: Path, columns: TableColumns) -> dict:
    """x, y and lengths of a long table: rows grouped by ``columns.id``,
    ordered by ``columns.time``, padded to the longest series."""
    table = _pyarrow_table(file)
    names = table.column_names
    wanted = [columns.id, columns.time, columns.target, *columns.features]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{file}: expected the columns {missing} (data.*_column), got {names}")
    features = list(columns.features) or [
        c for c in names if c not in (columns.id, columns.time, columns.target)
    ]
    data = {c: np.asarray(table.column(c).to_numpy(zero_copy_only=False)) for c in names}
    for c in features:
        if not np.issubdtype(data[c].dtype, np.number):
            raise DataError(f"{file}: column {c!r}: expected numbers, got {data[c].dtype}")
    order = np.lexsort((data[columns.time], data[columns.id]))
    ids = data[columns.id][order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    lengths = np.diff(np.r_[starts, len(ids)]).astype(np.int32)
    steps = int(lengths.max(initial=0))
    values = np.stack([data[c][order].astype(np.float32) for c in features], -1)
    x = np.zeros((len(starts), steps, len(features)), np.float32)
    target = data[columns.target][order]
    per_step = np.zeros((len(starts), steps), target.dtype)
    for n, (s, length) in enumerate(zip(starts, lengths, strict=True)):
        x[n, :length], per_step[n, :length] = values[s : s + length], target[s : s + length]
    y = per_step if columns.target_per_step else _per_series(file, columns, per_step, lengths)
    if np.issubdtype(y.dtype, np.floating):
        y = y[..., None]  # one regression output
    return {"x": x, "y": y, "lengths": lengths}


def _per_series(file, columns: TableColumns, per_step: np.ndarray, lengths) -> np.ndarray:
    first = per_step[:, 0]
    for n, length in enumerate(lengths):
        if (per_step[n, :length] != first[n]).any():
            raise DataError(
                f"{file}: column {columns.target!r}: varies within series {n} (one label per "
                "series expected); set data.target_per_step=True for a target at every step"
            )
    return first


def _pyarrow_table(file: Path):
    try:
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError(
            f"{file}: reading tables needs pyarrow: pip install 'recurrent-jax[data]'"
        ) from None
    try:
        if file.suffix == ".csv":
            return pyarrow.csv.read_csv(file)
        return pyarrow.parquet.read_table(file)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise DataError(f"{file}: cannot be read as a table ({error})") from None
