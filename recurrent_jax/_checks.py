"""Argument checks: every one fails at construction or trace time with one
message format, ``<argument>: expected <what>, got <given>``.

The library's entry points (cells, the engine, layers, packing, the front
doors, seq2seq, interop) call these; configs name their keys the same way
(``config.model.hidden_size: expected ...``, ``recurrent_jax.train.config``).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def describe(x) -> str:
    """A value as messages show it: arrays by dtype and shape, else its repr."""
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"{x.dtype}{list(x.shape)}"
    return repr(x)


def fail(name: str, expected: str, given) -> None:
    raise ValueError(f"{name}: expected {expected}, got {describe(given)}")


def fail_type(name: str, expected: str, given) -> None:
    raise TypeError(f"{name}: expected {expected}, got {describe(given)}")


def is_int(value) -> bool:
    """A Python or NumPy integer (not a bool)."""
    if isinstance(value, bool | np.bool_):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return not hasattr(value, "shape") or value.shape == ()


def check_positive_int(name: str, value) -> int:
    if not is_int(value) or value <= 0:
        fail(name, "a positive int", value)
    return int(value)


def check_non_negative_int(name: str, value) -> int:
    if not is_int(value) or value < 0:
        fail(name, "an int >= 0", value)
    return int(value)


def check_positive(name: str, value):
    """A number > 0 (an int or a float)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        fail(name, "a positive number", value)
    return value


def check_non_negative(name: str, value):
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        fail(name, "a non-negative number", value)
    return value


def check_at_least(name: str, value, minimum):
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= minimum:
        fail(name, f"at least {minimum}", value)
    return value


def check_choice(name: str, value, choices) -> Any:
    try:
        known = value in choices and not isinstance(value, bool)
    except (TypeError, ValueError):  # unhashable, or an array
        known = False
    if not known:
        fail(name, f"one of {sorted(map(str, choices))}", value)
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool | np.bool_):
        fail_type(name, "a bool", value)
    return bool(value)


def check_number(name: str, value):
    """A real scalar: a Python or NumPy number or a 0-d array (traced
    values pass: a swept hyperparameter)."""
    if isinstance(value, bool | str) or not (
        isinstance(value, int | float | np.number)
        or (
            hasattr(value, "shape")
            and value.shape == ()
            and jnp.issubdtype(value.dtype, jnp.number)
        )
    ):
        fail_type(name, "a real number", value)
    return value


def check_key(name: str, key):
    """A PRNG key: typed (``jax.random.key``) or raw uint32
    (``jax.random.PRNGKey``); traced keys pass."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key)
    raw = dtype == jnp.uint32 and getattr(key, "ndim", 0) >= 1
    if not (typed or raw):
        fail_type(name, "a PRNG key (jax.random.key(seed) or jax.random.PRNGKey(seed))", key)
    return key


def check_batch_shape(name: str, shape) -> tuple[int, ...]:
    """A tuple of non-negative ints (a carry's batch axes); a symbolic
    dimension of ``jax.export`` passes as it is."""
    symbolic = jax.export.is_symbolic_dim
    if not isinstance(shape, Sequence) or not all(
        symbolic(d) or (is_int(d) and d >= 0) for d in shape
    ):
        fail_type(name, "a tuple of ints >= 0, e.g. (32,)", shape)
    return tuple(d if symbolic(d) else int(d) for d in shape)


def check_cell(name: str, cell, *, layer_ok: bool = False):
    """An ``rj.Cell`` (or, with ``layer_ok``, an ``rj.Layer``)."""
    from recurrent_jax.cells.base import Cell
    from recurrent_jax.layers import Layer

    if isinstance(cell, Cell) or (layer_ok and isinstance(cell, Layer)):
        return cell
    what = "an rj.Cell (e.g. rj.cells.lstm(128))" + (" or an rj.Layer" if layer_ok else "")
    fail_type(name, what, cell)


def check_unknown(name: str, given: Mapping, known, *, what: str = "option") -> None:
    """Keyword options (or a config section's keys, ``what="key"``) must be
    among ``known``: a TypeError naming the unknown ones and the known."""
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"{name}: unknown {what}(s) {unknown}; expected some of {sorted(known)}")


def is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def check_inputs(xs, feature_size, time_major: bool, spatial_dims: int = 0):
    """xs must be floating with shape (B..., T, D), or (T, B..., D); a
    convolutional cell's (B..., T, *spatial, D)."""
    if not hasattr(xs, "shape") or xs.ndim < 2 + spatial_dims:
        space = "".join(f"S{i}, " for i in range(1, spatial_dims + 1))
        layout = f"(T, *batch, {space}D)" if time_major else f"(*batch, T, {space}D)"
        raise ValueError(f"xs: expected an array of shape {layout}, got {describe(xs)}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs: expected a floating dtype, got {describe(xs)}")
    if feature_size is not None and xs.shape[-1] != feature_size:
        raise ValueError(
            f"xs: expected {feature_size} features in the last axis (the size "
            f"the params were built for), got {describe(xs)}"
        )


def check_seq_lengths(
    seq_lengths, batch_shape, num_steps, *, name="seq_lengths", of="xs", steps="T"
):
    """``name``: ints of shape batch_shape, each in [0, num_steps] when
    concrete; errors refer to the array ``of`` and its step axis ``steps``."""
    if not hasattr(seq_lengths, "shape"):
        seq_lengths = np.asarray(seq_lengths)
    if not jnp.issubdtype(seq_lengths.dtype, jnp.integer):
        raise TypeError(
            f"{name}: expected integers of shape {tuple(batch_shape)}, got {describe(seq_lengths)}"
        )
    if tuple(seq_lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"{name}: expected shape {tuple(batch_shape)} (the batch dims of {of}), "
            f"got {describe(seq_lengths)}"
        )
    if is_concrete(seq_lengths) and seq_lengths.size:
        values = np.asarray(seq_lengths)
        lo, hi = int(values.min()), int(values.max())
        if lo < 0 or hi > num_steps:
            raise ValueError(
                f"{name}: expected values in [0, {num_steps}] ({steps} of {of}), "
                f"got values in [{lo}, {hi}]"
            )
    return jnp.asarray(seq_lengths)


def check_mask(name, mask, expected_shape):
    if not hasattr(mask, "shape"):
        mask = np.asarray(mask)
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{name}: expected a boolean array of shape {tuple(expected_shape)}, "
            f"got {describe(mask)}"
        )
    if tuple(mask.shape) != tuple(expected_shape):
        raise ValueError(f"{name}: expected shape {tuple(expected_shape)}, got {describe(mask)}")
    return jnp.asarray(mask)


def check_carry(name, carry, expected):
    """carry must have the structure and leaf shapes of ``expected``."""
    got_def = jax.tree_util.tree_structure(carry)
    want_def = jax.tree_util.tree_structure(expected)
    if got_def != want_def:
        raise ValueError(f"{name}: expected a carry like {want_def}, got {got_def}")
    for got, want in zip(
        jax.tree_util.tree_leaves(carry), jax.tree_util.tree_leaves(expected), strict=True
    ):
        if not hasattr(got, "shape") or tuple(got.shape) != tuple(want.shape):
            shapes = [tuple(w.shape) for w in jax.tree_util.tree_leaves(expected)]
            raise ValueError(
                f"{name}: expected leaf shapes {shapes}, got {describe(got)} among them"
            )
        if not jnp.issubdtype(got.dtype, jnp.floating):
            raise TypeError(f"{name}: expected floating leaves, got {describe(got)}")


def check_params(cell, params, input_size: int) -> None:
    """``params`` must have the names and leaf shapes of
    ``cell.init(key, input_size)`` (found by ``jax.eval_shape``: nothing is
    drawn). A cell whose ``init`` cannot be traced abstractly is not checked
    here; its own step then meets the params."""
    try:
        expected = jax.eval_shape(lambda key: cell.init(key, input_size), jax.random.PRNGKey(0))
    except jax.errors.JAXTypeError:
        return
    want = _shapes_by_path(expected)
    got = _shapes_by_path(params)
    built = f"the {cell.name} cell's params for {input_size} input features"
    if set(got) != set(want):
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        raise ValueError(
            f"params: expected {built}, {sorted(want)}; got {sorted(got)} "
            f"(missing {missing}, unexpected {extra})"
        )
    for path, shape in want.items():
        if got[path] != shape:
            raise ValueError(
                f"params{path}: expected shape {shape} ({built}), got {got[path]}; "
                "were the params built for another cell, size or input size?"
            )


def _shapes_by_path(tree) -> dict:
    """``{"['w_hh']": shape}`` for every leaf (non-arrays: their repr)."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    shape = lambda leaf: tuple(leaf.shape) if hasattr(leaf, "shape") else repr(leaf)  # noqa: E731
    return {jax.tree_util.keystr(path): shape(leaf) for path, leaf in leaves}


def check_dtype(name: str, dtype):
    """A floating dtype that JAX gives: float64 only with ``jax_enable_x64``
    on (else JAX would silently make it float32)."""
    try:
        value = None if dtype is None else jnp.dtype(dtype)
    except TypeError:
        value = None
    if value is None or not jnp.issubdtype(value, jnp.floating):
        fail(name, "a floating dtype (jnp.float32, jnp.bfloat16, jnp.float64, ...)", dtype)
    if jax.dtypes.canonicalize_dtype(value) != value:
        raise ValueError(
            f"{name}: {value.name} needs jax_enable_x64 (jax.config.update("
            f"'jax_enable_x64', True) before anything is traced); got {value.name} with it off"
        )
    return value


def check_rate(name, rate):
    """A dropout-like rate in [0, 1) when concrete (traced rates pass)."""
    check_number(name, rate)
    if is_concrete(rate) and not (0.0 <= float(rate) < 1.0):
        fail(name, "a rate in [0, 1)", rate)
    return rate


def is_zero(rate) -> bool:
    return is_concrete(rate) and float(rate) == 0.0
