"""Checks of the values read from a researcher's files, before and after
the cast to the dtypes a model reads (float32 features and targets, int32
ids), so that nothing wraps around or overflows silently. Each failure is
a one-line ``DataError`` naming where (``label``) and the first bad entry.
"""

from __future__ import annotations

import numpy as np

from recurrent_jax.data.base import DataError

INT32_MAX = int(np.iinfo(np.int32).max)
FLOAT32_MAX = float(np.finfo(np.float32).max)


def listing(values, most: int = 8) -> str:
    """``values`` as messages show them: the first ``most``, then a count."""
    values = [v.item() if hasattr(v, "item") else v for v in values]
    shown = ", ".join(map(repr, values[:most]))
    return f"[{shown}]" if len(values) <= most else f"[{shown}, ...] ({len(values)} in all)"


def _where(index, axes: tuple) -> str:
    return ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, index, strict=False))


def as_float32(label: str, a: np.ndarray, axes: tuple, valid=None) -> np.ndarray:
    """A float32 copy of the numbers ``a``, each finite and within float32
    (1e300 would become inf); ``axes`` name ``a``'s axes in messages.
    ``valid`` (a bool array over ``a``'s leading axes, or None for all):
    where values are read; elsewhere (padding) they are set to 0 unchecked."""
    with np.errstate(over="ignore"):  # overflow is reported below, where it is
        cast = np.array(a, np.float32)
    bad = ~np.isfinite(cast)
    if valid is not None:
        mask = valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim))
        bad &= mask
    if bad.any():
        first = tuple(np.argwhere(bad)[0])
        value = a[first].item()
        what = (
            f"{value!r} overflows float32 (|value| > {FLOAT32_MAX:.3g}); rescale it"
            if np.isfinite(value)
            else f"NaN or Inf ({bad.sum()} such values)"
        )
        raise DataError(f"{label}: expected finite numbers, got {what} at {_where(first, axes)}")
    if valid is not None:
        cast[~np.broadcast_to(mask, cast.shape)] = 0.0
    return cast


def as_int32_ids(label: str, a: np.ndarray, what: str, axes: tuple, valid=None) -> np.ndarray:
    """An int32 copy of the integer ids ``a`` (``what``: "class ids",
    "token ids"), each in [0, 2^31) where ``valid`` (else 0, unchecked)."""
    if not np.issubdtype(a.dtype, np.integer):
        raise DataError(f"{label}: expected integer {what}, got {a.dtype}")
    read = a if valid is None else np.where(valid, a, 0)
    for bad, bound in ((read < 0, ">= 0"), (read > INT32_MAX, "< 2^31 (int32)")):
        if bad.any():
            first = tuple(np.argwhere(bad)[0])
            raise DataError(
                f"{label}: expected {what} {bound}, got {a[first].item()} at {_where(first, axes)}"
            )
    return read.astype(np.int32)


def count_classes(label: str, ids: np.ndarray, num_classes: int | None) -> int:
    """C, the classes of the int ``ids`` (every scored class id): ids must be
    0..C-1, each present (an offset or a gap is a mistake), or, with
    ``num_classes``, any of 0..num_classes-1."""
    found = np.unique(ids)
    if num_classes is not None:
        if found.size and found[-1] >= num_classes:
            raise DataError(
                f"{label}: expected class ids < data.num_classes={num_classes}, got "
                f"{listing(found[found >= num_classes])}"
            )
        return num_classes
    if not found.size:
        return 1
    top = int(found[-1])
    if top + 1 != len(found):
        absent = np.setdiff1d(np.arange(min(top, 10**6) + 1), found)
        raise DataError(
            f"{label}: expected class ids 0..C-1 with every class present, got the ids "
            f"{listing(found)} ({top + 1 - len(found)} of 0..{top} absent: {listing(absent, 4)}); "
            f"remap them to 0..{len(found) - 1}, or set data.num_classes when some classes are "
            "absent on purpose"
        )
    return top + 1
