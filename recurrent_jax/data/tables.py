"""Long tables, one row per series and time step (CSV or Parquet, read
with pyarrow), as the padded ``x``, ``y`` and ``lengths`` of the arrays
task: rows grouped by ``columns.id``, ordered by ``columns.time``, each
series padded to the longest.

Every id is non-empty, features and targets are numbers (one per row),
finite and within float32; the padded arrays' size is computed before they
are allocated and checked against ``data.max_gib``. Errors name the file,
the column and the rows (counted from 0, the header not counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np

from recurrent_jax.data import readers, values
from recurrent_jax.data.base import DataError, MissingExtraError

TABLES = (".csv", ".parquet")


class TableColumns(NamedTuple):
    """How a long table's columns make arrays."""

    id: str
    time: str
    features: tuple  # () : every column but id, time and target
    target: str
    target_per_step: bool


def read_table(
    file: Path, columns: TableColumns, what: str, max_gib: float, *, targets: bool = True
) -> dict:
    """x float32 (N, T, D), y and lengths (N,) of the long table ``file``;
    without ``targets`` no y, and the target column need not be there."""
    pa, table = read(file, what)
    if not targets and columns.target not in table.column_names:
        columns = columns._replace(target=None)
    features = _checked_columns(file, pa, table, columns)
    order, lengths = _series(file, pa, table, columns)
    _check_padded_size(file, len(lengths), int(lengths.max()), len(features), max_gib)
    rows = [_floats(file, c, _column(file, table, c, "a number")) for c in features]
    x = _padded(np.stack(rows, -1), order, lengths)
    if not targets:
        return {"x": x, "lengths": lengths}
    target = _column(file, table, columns.target, "a target")
    if not np.issubdtype(target.dtype, np.integer):  # class ids stay ints
        target = _floats(file, columns.target, target)
    per_step = _padded(target, order, lengths)
    y = per_step if columns.target_per_step else _per_series(file, columns, per_step, lengths)
    if np.issubdtype(y.dtype, np.floating):
        y = y[..., None]  # one regression output
    return {"x": x, "y": y, "lengths": lengths}


def _checked_columns(file, pa, table, columns: TableColumns) -> list[str]:
    """The feature columns, after checking that every column named is there
    and holds numbers."""
    names = table.column_names
    target = [] if columns.target is None else [columns.target]
    wanted = [columns.id, columns.time, *target, *columns.features]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{file}: expected the columns {missing} (data.*_column), got {names}")
    if table.num_rows == 0:
        raise DataError(f"{file}: holds no rows, only a header (one row per series and step)")
    features = list(columns.features) or [
        c for c in names if c not in (columns.id, columns.time, columns.target)
    ]
    _check_numbers(file, pa, table, columns.time, time=True)
    for c in [*features, *target]:
        _check_numbers(file, pa, table, c, target=c == columns.target)
    return features


def _series(file, pa, table, columns: TableColumns) -> tuple[np.ndarray, np.ndarray]:
    """The rows in order of id, then time, and the length of each series."""
    ids = _ids(file, pa, table, columns.id)
    order = np.lexsort((_column(file, table, columns.time, "a time"), ids))
    starts = np.flatnonzero(np.r_[True, ids[order][1:] != ids[order][:-1]])
    return order, np.diff(np.r_[starts, len(ids)]).astype(np.int32)


def _padded(rows: np.ndarray, order: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(N, T, ...) of the table's ``rows`` (one per row, any trailing shape),
    each series padded with zeros to the longest."""
    series = np.repeat(np.arange(len(lengths)), lengths)
    step = np.arange(len(order)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out = np.zeros((len(lengths), int(lengths.max()), *rows.shape[1:]), rows.dtype)
    out[series, step] = rows[order]
    return out


def read(file: Path, what: str, text_columns: tuple = ()):
    """(pyarrow, the table of ``file``); a CSV's ``text_columns`` are read
    as strings, never inferred as numbers ("007" stays "007")."""
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise MissingExtraError(
            f"{file}: reading tables needs pyarrow: pip install 'recurrent-jax[data]'"
        ) from None
    with readers.open_regular(file, what) as f:
        try:
            if file.suffix == ".csv":
                types = {c: pyarrow.string() for c in text_columns}
                return pyarrow, _read_csv(pyarrow.csv, f, types=types)
            return pyarrow, pyarrow.parquet.read_table(f)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise DataError(f"{file}: cannot be read as a table ({_reason(error)})") from None


def _read_csv(csv, f, threads: bool = True, types: dict | None = None):
    """The CSV table of ``f``; a malformed row is named by its line, never
    shown (its text is data)."""
    malformed = []

    def refuse(row):
        malformed.append(row)
        return "error"

    f.seek(0)
    try:
        return csv.read_csv(
            f,
            read_options=csv.ReadOptions(use_threads=threads),
            parse_options=csv.ParseOptions(invalid_row_handler=refuse),
            convert_options=csv.ConvertOptions(column_types=types or {}),
        )
    except ValueError:
        if not malformed:
            raise
        row = malformed[0]
        if row.number is None and threads:  # without threads the row's line is known
            return _read_csv(csv, f, threads=False, types=types)
        raise ValueError(
            f"line {row.number}: expected {row.expected_columns} columns, got "
            f"{row.actual_columns} (a quote left open, or a comma too many or too few)"
        ) from None


def _reason(error) -> str:
    text = readers.one_line(error)
    return text.split(": ", 2)[1] if text.startswith("CSV parse error: ") else text


def _check_numbers(file, pa, table, name: str, *, target=False, time=False) -> None:
    kind = table.schema.field(name).type
    numbers = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if numbers or (time and pa.types.is_temporal(kind)):
        return
    if target and (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        sample = table[name].drop_null()[0].as_py() if table[name].null_count < len(table) else ""
        raise DataError(
            f"{file}: column {name!r}: expected integer class ids or float targets, got strings "
            f"(such as {sample!r}); map the classes to ids 0..C-1"
        )
    empty = " (the column is empty)" if pa.types.is_null(kind) else ""
    raise DataError(f"{file}: column {name!r}: expected one number per row, got {kind}{empty}")


def _blank_rows(file, name: str, rows: np.ndarray, what: str) -> None:
    if rows.size:
        raise DataError(
            f"{file}: column {name!r}: expected {what} in every row, got an empty one in rows "
            f"{values.listing(rows)} (counted from 0 after the header)"
        )


def _ids(file, pa, table, name: str) -> np.ndarray:
    """The series of each row, as ints (ids of any type)."""
    import pyarrow.compute as pc

    column = table[name]
    blank = pc.is_null(column, nan_is_null=True)
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        blank = pc.or_kleene(blank, pc.equal(pc.utf8_trim_whitespace(column), ""))
    _blank_rows(file, name, np.flatnonzero(blank.to_numpy(zero_copy_only=False)), "an id")
    return np.unique(column.to_numpy(zero_copy_only=False), return_inverse=True)[1]


def _column(file, table, name: str, what: str) -> np.ndarray:
    column = table[name]
    blank = column.is_null().to_numpy(zero_copy_only=False)
    _blank_rows(file, name, np.flatnonzero(blank), what)
    return column.to_numpy(zero_copy_only=False)


def _floats(file, name: str, column: np.ndarray) -> np.ndarray:
    """The column ``name`` as float32, each value finite there."""
    return values.as_float32(f"{file}: column {name!r}", column, ("row",))


def _check_padded_size(file, count: int, steps: int, features: int, max_gib: float) -> None:
    nbytes = count * steps * (features + 1) * 4  # float32 x and a 4-byte target a step
    if nbytes > max_gib * readers.GIB:
        raise DataError(
            f"{file}: padding its {count} series to the longest ({steps} steps) with {features} "
            f"features takes {nbytes / readers.GIB:.3g} GiB, more than data.max_gib="
            f"{max_gib:g}; cut or split the longest series, or raise data.max_gib"
        )


def _per_series(file, columns: TableColumns, per_step: np.ndarray, lengths) -> np.ndarray:
    valid = np.arange(per_step.shape[1])[None] < lengths[:, None]
    varies = (valid & (per_step != per_step[:, :1])).any(1)
    if varies.any():
        raise DataError(
            f"{file}: column {columns.target!r}: varies within series {int(np.argmax(varies))} "
            "(one label per series expected); set data.target_per_step=True for a target at "
            "every step"
        )
    return per_step[:, 0]
