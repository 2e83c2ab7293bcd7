"""Input checks that fail at trace time with the argument, expected and given."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def describe(x) -> str:
    return f"{x.dtype}{list(x.shape)}" if hasattr(x, "shape") else repr(x)


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


def check_rate(name, rate):
    """A dropout-like rate in [0, 1) when concrete (traced rates pass)."""
    if is_concrete(rate) and not (0.0 <= float(rate) < 1.0):
        raise ValueError(f"{name}: expected a rate in [0, 1), got {rate!r}")
    return rate


def is_zero(rate) -> bool:
    return is_concrete(rate) and float(rate) == 0.0
