"""The sequence engine: run a cell over time.

``unroll`` hoists the input half of every gate out of the loop (one GEMM for
all steps), then scans the recurrent half. It owns padding, reverse order,
per-sequence regularisers, episode resets and the choice of implementation.
"""

from __future__ import annotations

import operator

import jax
import jax.numpy as jnp

from recurrent_jax import _checks, backends, packing
from recurrent_jax import engine as engine_lib
from recurrent_jax import remat as remat_module
from recurrent_jax._step import StepInputs, StepOptions
from recurrent_jax.cells.base import Cell, carry_dtype_of, with_defaults


def unroll(
    cell: Cell,
    params,
    xs: jax.Array,
    *,
    initial_carry=None,
    seq_lengths=None,
    mask=None,
    resets=None,
    reset_carry=None,
    reverse: bool = False,
    keep_order: bool = True,
    time_major: bool = False,
    return_carries: bool = False,
    dropout=0.0,
    recurrent_dropout=0.0,
    zoneout=0.0,
    key=None,
    deterministic: bool = False,
    engine: engine_lib.Engine | None = None,
    **engine_options,
):
    r"""Runs ``cell`` over the time axis of ``xs``.

    .. math::  (c_t, y_t) = \mathrm{step}(c_{t-1}, x_t W_{ih} + b), \quad t = 0 … T−1

    Args:
      cell: a ``Cell``; user cells may give only ``init`` and ``step``.
      params: the cell's params.
      xs: inputs (B..., T, D), any number of batch dims; (T, B..., D) with
        ``time_major``.
      initial_carry: carry at t = 0 (default ``cell.initial_carry``, zeros),
        leaves (B..., ·).
      seq_lengths: ints (B...) in [0, T]; steps t >= length are padding.
      mask: bool (B..., T) ((T, B...) with ``time_major``), True where valid.
        Padded steps keep the carry and output zeros.
      resets: bool like ``mask``; where set, the carry restarts from
        ``initial_carry`` before reading x_t (episode boundaries).
      reset_carry: the carry ``resets`` restart from (default: the initial
        carry), leaves (B..., ·).
      reverse: read each sequence from its last valid step back to the first.
        Outputs stay aligned with input positions (y_t is the output after
        reading x_{len-1}, ..., x_t), as PyTorch's backward direction.
      keep_order: with ``reverse``, False returns outputs in processing
        order instead (y_0 after reading x_{len-1}); needs prefix masks.
      time_major: layout of ``xs``, ``mask``, ``resets`` and the outputs.
      return_carries: also return the carry after every step (B..., T, ·).
      dropout: variational input dropout rate: one mask per sequence over
        the features of x, the same at every step (Gal & Ghahramani 2016).
      recurrent_dropout: rate of one mask per sequence over the recurrent
        input h_{t-1} of the recurrent kernel (Gal & Ghahramani 2016).
      zoneout: rate at which each carry unit keeps its previous value at a
        step (Krueger et al. 2016); at evaluation the expectation
        ``p·old + (1−p)·new`` is used. It acts on the carry: ``y_t`` is the
        cell's output before zoneout.
      key: PRNG key for the regularisers; required when one is active. The
        masks are drawn once, outside the loop.
      deterministic: evaluation mode; dropout off, zoneout averaged.
      engine: an ``rj.Engine``: which backend runs the loop and its
        settings (``impl``, ``unroll``, ``hoist``, ``remat``,
        ``chunk_length``, ``deer_*``); default ``rj.Engine()``.
      **engine_options: fields of ``rj.Engine`` given directly, overriding
        ``engine``'s (``rj.unroll(..., impl="scan")``).

    Returns:
      ``(final_carry, ys)`` with ys (B..., T, H) (zero at padded steps), and
      ``carries`` third when ``return_carries``. The final carry is the carry
      after the last valid step (the initial carry for length 0).
    """
    engine = engine_lib.resolve(engine, **engine_options)
    cell = with_defaults(_checks.check_cell("cell", cell))
    flags = dict(
        reverse=reverse,
        keep_order=keep_order,
        time_major=time_major,
        return_carries=return_carries,
        deterministic=deterministic,
    )
    for name, value in flags.items():
        _checks.check_bool(name, value)
    if key is not None:
        _checks.check_key("key", key)
    if isinstance(xs, packing.Packed):
        boundaries = dict(seq_lengths=seq_lengths, mask=mask, resets=resets)
        _check_packed_options(boundaries | dict(reset_carry=reset_carry), time_major, keep_order)
        return _unroll_packed(
            cell,
            params,
            xs,
            initial_carry=initial_carry,
            reverse=reverse,
            return_carries=return_carries,
            regularisers=(dropout, recurrent_dropout, zoneout),
            key=key,
            deterministic=deterministic,
            engine=engine,
        )
    spatial = cell.spatial_dims
    _checks.check_inputs(xs, _input_size(params), time_major, spatial)
    _checks.check_params(cell, params, xs.shape[-1])
    time_axis = -2 - spatial  # (B..., T, *spatial, D)
    if not time_major:
        xs = jnp.moveaxis(xs, time_axis, 0)
    num_steps, batch_shape = xs.shape[0], xs.shape[1 : xs.ndim - 1 - spatial]
    carry_shape = xs.shape[1:-1]  # batch and spatial axes of the carry leaves
    valid = valid_steps(seq_lengths, mask, batch_shape, num_steps, time_major)
    resets = _time_major_mask("resets", resets, batch_shape, num_steps, time_major)
    keys = _regulariser_keys(key, deterministic, dropout, recurrent_dropout, zoneout)

    carry0 = _initial_carry(cell, params, initial_carry, carry_shape)
    xs = _input_dropout(xs, dropout, keys[0])
    step_inputs = StepInputs(
        xp=xs,  # projected by the backend, per segment with ``remat``
        valid=valid,
        keep=_zoneout_masks(carry0, num_steps, zoneout, keys[2]),
        reset=resets,
    )
    options = StepOptions(
        recurrent_mask=_recurrent_mask(cell, carry0, recurrent_dropout, keys[1]),
        zoneout=None if _checks.is_zero(zoneout) or not deterministic else zoneout,
        reset_carry=_reset_carry(resets, reset_carry, carry0),
    )
    if reverse:
        step_inputs = jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), step_inputs)

    in_use = {
        "mask": mask is not None,
        "reverse": reverse,
        "resets": resets is not None,
        "return_carries": return_carries,
        "recurrent_dropout": keys[1] is not None,
        "zoneout": keys[2] is not None or options.zoneout is not None,
        "remat": engine.remat is not None,
        "no_hoist": not engine.hoist,
        "initial_carry": initial_carry is not None,
    }
    call = backends.Call(cell, params, xs, engine, frozenset(k for k, v in in_use.items() if v))
    backend = backends.choose(call)
    run = lambda carry, inputs: backends.run(backend, call, carry, inputs, options)  # noqa: E731
    if engine.remat is None:
        final, ys, carries = run(carry0, step_inputs)
    else:
        length = min(engine.remat, num_steps)
        final, ys, carries = remat_module.segmented(run, carry0, step_inputs, length, batch_shape)

    if reverse:
        ys, carries = jax.tree_util.tree_map(lambda a: jnp.flip(a, 0), (ys, carries))
        if not keep_order:
            lengths = backends.lengths_of(valid, num_steps, batch_shape)
            ys, carries = jax.tree_util.tree_map(lambda a: reverse_valid(a, lengths), (ys, carries))
    if not time_major:
        ys, carries = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, time_axis), (ys, carries))
    return (final, ys, carries) if return_carries else (final, ys)


# --- packed input ---------------------------------------------------------


def _check_packed_options(boundaries: dict, time_major: bool, keep_order: bool) -> None:
    for name, value in boundaries.items():
        if value is not None:
            raise ValueError(
                f"{name}: a Packed input holds its own sequence boundaries; got {name} too"
            )
    if time_major:
        raise ValueError("time_major: a Packed input is (rows, slots, features); got True")
    if not keep_order:
        raise ValueError("keep_order: False is not supported with a Packed input")


def _unroll_packed(
    cell, params, packed, *, initial_carry, reverse, return_carries, regularisers, key, **options
):
    """``unroll`` of a ``Packed`` input: each sequence starts from
    ``initial_carry`` (one sequence's carry, shared; default zeros) at its
    first slot; in ``reverse`` each sequence is reversed in place, run, and
    put back. Returns per-sequence final carries (leaves (N, ·)) and the
    outputs as a ``Packed``."""
    dropout, recurrent_dropout, zoneout = regularisers
    if cell.spatial_dims:
        raise ValueError(f"xs: a Packed input needs a cell without spatial axes, got {cell.name}")
    if packed.data.ndim != 3:
        raise ValueError(
            f"xs: expected Packed data (rows, slots, features), got {packed.data.shape}"
        )
    if not options["deterministic"] and not _checks.is_zero(recurrent_dropout):
        raise ValueError(
            "recurrent_dropout: its one mask per sequence cannot follow the sequences of a "
            "packed row; pad the batch instead, or use dropout / zoneout"
        )
    name = "initial_carry (one sequence's, for a Packed input)"
    initial_carry = _initial_carry(cell, params, initial_carry, (), name)
    rows = packed.data.shape[0]
    carry0 = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(c, (rows, *c.shape)), initial_carry)
    k_input, k_rest = (None, None) if key is None else jax.random.split(key)
    xs = _packed_input_dropout(packed, dropout, k_input, options["deterministic"])
    index = packing.reversal_index(packed) if reverse else None
    if reverse:
        xs = packing.take_slots(xs, index)
    _, ys, carries = unroll(
        cell,
        params,
        xs,
        initial_carry=carry0,
        mask=packed.valid,
        resets=packed.resets,
        return_carries=True,
        zoneout=zoneout,
        key=k_rest,
        **options,
    )
    final = packing.per_sequence_last(carries, packed, initial_carry)
    if reverse:
        ys, carries = jax.tree_util.tree_map(lambda a: packing.take_slots(a, index), (ys, carries))
    out = packed.replace_data(ys)
    return (final, out, carries) if return_carries else (final, out)


def _packed_input_dropout(packed, rate, key, deterministic):
    """Input dropout with one mask per packed sequence (as per padded row)."""
    if deterministic or key is None or _checks.is_zero(_checks.check_rate("dropout", rate)):
        return packed.data
    num_features = packed.data.shape[-1]
    masks = dropout_mask(key, rate, (packed.lengths.shape[0], num_features), packed.data.dtype)
    return packed.data * packing.sequence_rows(masks, packed)


# --- argument handling ---------------------------------------------------


def _input_size(params):
    """D the params were built for: rows of ``w_ih``, or the input channels
    of a convolutional cell's kernel ``k_ih`` (*kernel, C, G); else None."""
    if not isinstance(params, dict):
        return None
    w = params.get("w_ih", params.get("k_ih"))
    if w is None or not hasattr(w, "shape") or w.ndim < 2:
        return None
    return w.shape[0] if "w_ih" in params else w.shape[-2]


def _time_major_mask(name, m, batch_shape, num_steps, time_major):
    if m is None:
        return None
    shape = (num_steps, *batch_shape) if time_major else (*batch_shape, num_steps)
    m = _checks.check_mask(name, m, shape)
    return m if time_major else jnp.moveaxis(m, -1, 0)


def length_mask(seq_lengths, num_steps: int) -> jax.Array:
    """bool (*batch, T) mask of valid steps: True where t < seq_lengths.

    seq_lengths: int (*batch); the one lengths→mask conversion of the library.
    """
    lengths = jnp.asarray(seq_lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"seq_lengths: expected integers, got {_checks.describe(lengths)}")
    symbolic = jax.export.is_symbolic_dim(num_steps)  # a shape-polymorphic export's T
    if not symbolic and (not _is_index(num_steps) or num_steps < 0):
        raise ValueError(f"num_steps: expected a non-negative int, got {num_steps!r}")
    steps = jnp.arange(num_steps).reshape((1,) * lengths.ndim + (num_steps,))
    return steps < lengths[..., None]


def _is_index(value) -> bool:
    try:
        operator.index(value)
    except TypeError:
        return False
    return True


def valid_steps(seq_lengths, mask, batch_shape, num_steps, time_major):
    """(T, B...) bool of valid steps, or None when every step is valid."""
    if seq_lengths is not None and mask is not None:
        raise ValueError("seq_lengths, mask: give at most one of them, got both")
    if seq_lengths is not None:
        lengths = _checks.check_seq_lengths(seq_lengths, batch_shape, num_steps)
        return jnp.moveaxis(length_mask(lengths, num_steps), -1, 0)
    return _time_major_mask("mask", mask, batch_shape, num_steps, time_major)


def reverse_valid(a, lengths):
    """Reverses the first ``lengths[b]`` steps of each sequence of ``a``.

    a: (T, B..., ·) time-major; lengths: (B...). Padding stays in place.
    """
    num_steps = a.shape[0]
    steps = jnp.arange(num_steps).reshape(num_steps, *(1 for _ in lengths.shape))
    index = jnp.where(steps < lengths[None], lengths[None] - 1 - steps, steps)
    index = index.reshape(*index.shape, *(1 for _ in a.shape[index.ndim :]))
    return jnp.take_along_axis(a, jnp.broadcast_to(index, a.shape), axis=0)


def _initial_carry(cell, params, initial_carry, batch_shape, name="initial_carry"):
    """The cell's initial carry in the dtype it asks for with ``params``
    (``carry_dtype_of``), or ``initial_carry`` checked against it and cast
    to its dtypes leaf by leaf."""
    expected = cell.initial_carry(batch_shape, carry_dtype_of(cell, params))
    if initial_carry is None:
        return expected
    _checks.check_carry(name, initial_carry, expected)
    return jax.tree_util.tree_map(lambda c, e: c.astype(e.dtype), initial_carry, expected)


def _reset_carry(resets, reset_carry, carry0):
    if resets is None:
        return None
    if reset_carry is None:
        return carry0
    _checks.check_carry("reset_carry", reset_carry, carry0)
    return jax.tree_util.tree_map(lambda c, e: c.astype(e.dtype), reset_carry, carry0)


# --- regularisers --------------------------------------------------------


def _regulariser_keys(key, deterministic, dropout, recurrent_dropout, zoneout):
    """One key per active regulariser (input, recurrent, zoneout), else None."""
    rates = {"dropout": dropout, "recurrent_dropout": recurrent_dropout, "zoneout": zoneout}
    for name, rate in rates.items():
        _checks.check_rate(name, rate)
    active = [not deterministic and not _checks.is_zero(rate) for rate in rates.values()]
    if any(active) and key is None:
        raise ValueError(
            "key: a PRNG key is required when dropout, recurrent_dropout or "
            "zoneout is active and deterministic=False, got None"
        )
    if not any(active):
        return (None, None, None)
    k = jax.random.split(key, 3)
    return tuple(ki if on else None for ki, on in zip(k, active, strict=True))


def dropout_mask(key, rate, shape, dtype=jnp.float32):
    """Inverted-dropout mask: 0 with probability ``rate``, else 1/(1−rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, shape)
    return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(dtype)


def _input_dropout(xs, rate, key):
    if key is None:
        return xs
    shape = (1, *xs.shape[1:])  # one mask per sequence, shared over time
    return xs * dropout_mask(key, rate, shape, xs.dtype)


def _recurrent_mask(cell, carry0, rate, key):
    if key is None:
        return None
    h_in = cell.read(carry0)
    return dropout_mask(key, rate, h_in.shape, h_in.dtype)


def _zoneout_masks(carry0, num_steps, rate, key):
    if key is None:
        return None
    leaves, treedef = jax.tree_util.tree_flatten(carry0)
    keys = jax.random.split(key, len(leaves))
    masks = [
        jax.random.bernoulli(k, rate, (num_steps, *leaf.shape))
        for k, leaf in zip(keys, leaves, strict=True)
    ]
    return jax.tree_util.tree_unflatten(treedef, masks)
